"""REINFORCE: the gradient estimate against the analytic policy gradient, learning, continuous actions."""
import numpy as np
import pytorch_lightning as pl
import torch

import lightning_pg as lp
from lightning_pg import REINFORCE


def _bandit_model(baseline, num_envs=4096):
    torch.manual_seed(0)
    model = REINFORCE(env_id="tests.envs:TwoArmedBandit", baseline=baseline, network=[], num_envs=num_envs)
    head = model.policy.pi_head  # logits = W * obs + b, obs is always 1
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.3, -0.2]))
    return model, head


def test_gradient_estimate_matches_analytic_policy_gradient():
    """∂J/∂θ_a = π_a (r_a − J) for softmax logits θ on a bandit paying r = (1, 3)."""
    model, head = _bandit_model("none")
    batch = model.make_data().collect()
    assert batch["obs"].shape == (4096, 1) and batch["env_steps"] == 4096
    model.loss(batch)["loss_policy"].backward()
    estimate = -head.bias.grad  # the loss is −J's estimate

    pi = torch.softmax(torch.tensor([0.3, -0.2]), 0)
    payoff = torch.tensor([1.0, 3.0])
    analytic = pi * (payoff - (pi * payoff).sum())
    # standard error of the per-episode estimate (onehot(a) − π) · r_a
    actions = batch["actions"]
    per_episode = (torch.nn.functional.one_hot(actions, 2) - pi) * payoff[actions].unsqueeze(1)
    stderr = per_episode.std(0) / np.sqrt(len(actions))
    assert torch.all((estimate - analytic).abs() < 4 * stderr), (estimate, analytic, stderr)
    assert torch.all(estimate.sign() == analytic.sign())


def test_baseline_keeps_the_gradient_unbiased_and_lowers_its_variance():
    model, head = _bandit_model("value")
    with torch.no_grad():  # a constant baseline b = 2 (the value net sees a constant input)
        model.policy.v_head.weight.zero_()
        model.policy.v_head.bias.fill_(2.0)
    batch = model.make_data().collect()
    model.loss(batch)["loss_policy"].backward()
    pi = torch.softmax(torch.tensor([0.3, -0.2]), 0)
    payoff = torch.tensor([1.0, 3.0])
    analytic = pi * (payoff - (pi * payoff).sum())
    actions = batch["actions"]
    onehot = torch.nn.functional.one_hot(actions, 2) - pi
    with_baseline = onehot * (payoff[actions] - 2.0).unsqueeze(1)
    without = onehot * payoff[actions].unsqueeze(1)
    stderr = with_baseline.std(0) / np.sqrt(len(actions))
    assert torch.all((-head.bias.grad - analytic).abs() < 4 * stderr)
    # the library's own estimates, on 64 disjoint parts of the batch, spread less with the baseline than the
    # estimates of a model without one (same weights, same episodes); by about the ratio the maths says
    plain, plain_head = _bandit_model("none")
    spread = {}
    for name, (m, h) in {"with": (model, head), "without": (plain, plain_head)}.items():
        estimates = []
        for part in torch.arange(len(actions)).chunk(64):
            h.bias.grad = None
            m.loss({k: batch[k][part] for k in ("obs", "actions", "returns")})["loss_policy"].backward()
            estimates.append(-h.bias.grad.clone())
        spread[name] = torch.stack(estimates).std(0)
    assert torch.all(spread["with"] < 0.7 * spread["without"]), spread
    torch.testing.assert_close(spread["with"] / spread["without"], with_baseline.std(0) / without.std(0), rtol=0.3, atol=0)


def test_reinforce_learns_cartpole(tmp_path):
    pl.seed_everything(0)
    model = REINFORCE(env_id="CartPole-v1", total_timesteps=40_000, eval_every=-1, num_envs=8)
    before, _ = lp.evaluate(model, n_episodes=10, seed=0)
    trainer = pl.Trainer(
        logger=False, enable_progress_bar=False, enable_checkpointing=False, default_root_dir=tmp_path,
        accelerator="cpu", max_epochs=-1,
    )
    trainer.fit(model)
    after, _ = lp.evaluate(model, n_episodes=10, seed=0)
    assert model.num_timesteps >= 40_000
    assert before < 50 and after > 150, (before, after)


def test_continuous_actions_pendulum():
    pl.seed_everything(0)
    model = REINFORCE(env_id="Pendulum-v1", num_envs=2, total_timesteps=400)
    batch = model.make_data().collect()
    assert batch["actions"].shape == (400, 1)  # 200-step episodes cut by the time limit, 2 envs
    assert batch["returns"].shape == (400,)
    losses = model.loss(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    action = model.predict(np.zeros(3, np.float32))
    with torch.no_grad():  # deterministic predict is the Gaussian's mean, inside [-2, 2] here, so not clipped
        mean = model.policy.dist(torch.zeros(1, 3)).mode()[0].numpy()
    assert action.shape == (1,) and abs(mean[0]) < 2.0
    np.testing.assert_allclose(action, mean, rtol=1e-5, atol=1e-6)
