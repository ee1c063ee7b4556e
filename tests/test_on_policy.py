"""A2C and PPO: rollouts, GAE through cuts, action storage, normalization, schedules, update counts, export; every
update against a plain-autograd reference (subclasses included), and each fast path against its plain form."""
import copy

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

import lightning_pg as lp
from lightning_pg import A2C, PPO
from lightning_pg.data.rollouts import TorchActor
from lightning_pg.networks import ActorCritic, StackedMLP
from lightning_pg.networks.actor_critic import CategoricalHead, Linear
from lightning_pg.networks.actor_critic import _TanhMLPFunction
from lightning_pg.networks.numpy_actor import NumpyActor
from lightning_pg.optimizer_steps import OptimizerSteps
from tests.envs import RecordActions
from tests.helpers import ckpt_state, csv_logger, csv_rows, run_cli, run_folder
from tests.reference import (a2c_objective, assert_gradients_match, log_prob as reference_log_prob, ppo_objective,
                             record_step, reference_gradient, standard_forward)


def _fit(model, tmp_path, **kwargs):
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False, default_root_dir=tmp_path,
                         accelerator="cpu", max_epochs=-1, enable_model_summary=False, **kwargs)
    trainer.fit(model)
    return trainer


def test_rollout_gae_through_a_termination_and_a_time_limit_cut():
    """One env, 7 steps: episode 0 terminates at t=1; episode 1 is cut by the time limit at t=4."""
    torch.manual_seed(0)
    model = PPO(env_id="tests.envs:AlternatingEnd", env_kwargs={"max_episode_steps": 3}, num_envs=1, n_steps=7,
                batch_size=7, gamma=0.9, gae_lambda=0.8)
    batch = model.make_data().collect()
    # observations seen: episode 0: 0, .1 (terminated after this step); episode 1: 0, .1, .2 (cut, true final
    # obs .3); episode 2: 0, .1 (terminated again, on the rollout's last row)
    seen = [0.0, 0.1, 0.0, 0.1, 0.2, 0.0, 0.1]
    torch.testing.assert_close(batch["obs"].squeeze(-1), torch.tensor(seen))
    with torch.no_grad():
        value = lambda x: model.policy.value(torch.tensor([[x]])).item()  # noqa: E731
    v = [value(x) for x in seen]
    next_v = [value(0.1), 0.0, value(0.1), value(0.2), value(0.3), value(0.1), 0.0]  # 0 where terminated
    ends = [False, True, False, False, True, False, True]
    expected, running = [0.0] * 7, 0.0
    for t in reversed(range(7)):
        delta = 1.0 + 0.9 * next_v[t] - v[t]
        running = delta + (0.0 if ends[t] else 0.9 * 0.8 * running)
        expected[t] = running
    torch.testing.assert_close(batch["advantages"], torch.tensor(expected), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch["returns"], batch["advantages"] + torch.tensor(v), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(batch["episode_lengths"], [2, 3, 2])


@pytest.mark.parametrize("algo", ["PPO", "A2C"])
def test_bootstrapping_through_the_time_limit_changes_the_greedy_action(tmp_path, algo):
    pl.seed_everything(0)
    kwargs = dict(n_steps=16, batch_size=128, n_epochs=4) if algo == "PPO" else dict(n_steps=8)
    model = getattr(lp, algo)(env_id="tests.envs:ShortHorizon", env_kwargs={"max_episode_steps": 1}, num_envs=8,
                              gamma=0.9, learning_rate=3e-3, total_timesteps=25_000, eval_every=-1, **kwargs)
    _fit(model, tmp_path)
    with torch.no_grad():
        v_b = model.policy.value(torch.tensor([[0.0, 1.0]])).item()
    assert v_b > 12  # V(B) = 2 / (1 - 0.9) = 20 is only learnable by bootstrapping through the cuts
    assert model.predict(np.array([1.0, 0.0], np.float32)) == 1  # in A, move to B


def test_raw_action_is_stored_and_only_the_env_copy_is_clipped():
    torch.manual_seed(0)
    RecordActions.received.clear()
    model = PPO(env_id="tests.envs:RecordActions", num_envs=2, n_steps=50, batch_size=100, log_std_init=1.5)
    batch = model.make_data().collect()
    raw = batch["actions"]
    assert raw.abs().max() > 2.0  # std e^1.5 ≈ 4.5: many samples fall outside [-2, 2]
    sent = np.concatenate(RecordActions.received)
    assert np.abs(sent).max() <= 2.0
    np.testing.assert_allclose(sent.reshape(-1), raw.clamp(-2, 2).reshape(-1).numpy(), rtol=1e-6)
    with torch.no_grad():  # the stored log-prob is the raw sample's
        torch.testing.assert_close(model.policy.dist(batch["obs"]).log_prob(raw), batch["log_probs"])


def test_advantage_normalization_of_a_single_sample_is_finite(tmp_path):
    model = PPO(env_id="CartPole-v1", num_envs=1, n_steps=4, batch_size=1, n_epochs=1, total_timesteps=8, eval_every=-1)
    assert model.normalize_advantages(torch.tensor([3.0])).item() == 0.0
    trainer = _fit(model, tmp_path)
    assert trainer.global_step == 8  # 2 rollouts x 4 minibatches of one
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_gradient_steps_per_rollout_are_epochs_times_minibatches(tmp_path):
    model = PPO(env_id="CartPole-v1", num_envs=4, n_steps=16, batch_size=16, n_epochs=3, total_timesteps=3 * 64,
                eval_every=-1)
    trainer = _fit(model, tmp_path)
    assert model.num_timesteps == 192 and trainer.global_step == 3 * (3 * 64 // 16)
    a2c = A2C(env_id="CartPole-v1", num_envs=4, n_steps=5, total_timesteps=200, eval_every=-1)
    assert _fit(a2c, tmp_path).global_step == 10


def test_small_rollouts_share_a_training_step_until_an_evaluation(tmp_path):
    """A2C's 20-step rollouts: one training_step takes rollouts until 256 env steps (Lightning's loop runs
    once per group), and ends early after an evaluation so that best.ckpt holds the evaluated weights."""
    a2c = A2C(env_id="CartPole-v1", num_envs=4, n_steps=5, total_timesteps=1000, eval_every=100, eval_episodes=1)
    seen = []
    a2c.on_train_batch_end = lambda *args: seen.append((a2c.num_timesteps, a2c.evaluated_at))
    trainer = _fit(a2c, tmp_path)
    assert trainer.global_step == 50  # one gradient step per rollout, as before
    assert [steps for steps, _ in seen] == [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]
    assert all(steps == evaluated for steps, evaluated in seen)  # each group ended right at its evaluation
    no_eval = A2C(env_id="CartPole-v1", num_envs=4, n_steps=5, total_timesteps=1000, eval_every=-1)
    seen.clear()
    no_eval.on_train_batch_end = lambda *args: seen.append(no_eval.num_timesteps)
    _fit(no_eval, tmp_path)
    assert seen == [260, 520, 780, 1000]


def test_observation_and_reward_statistics_survive_save_and_load_and_freeze_in_evaluation(tmp_path):
    pl.seed_everything(0)
    model = PPO(env_id="Pendulum-v1", num_envs=2, n_steps=64, batch_size=64, n_epochs=1, total_timesteps=256,
                normalize_obs=True, normalize_reward=True, eval_every=-1)
    trainer = _fit(model, tmp_path)
    obs_rms, ret_rms = model.policy.obs_rms, model.ret_rms
    assert obs_rms.count > 256 and not torch.allclose(obs_rms.mean, torch.zeros(3, dtype=torch.float64))
    assert ret_rms.count > 256 and ret_rms.var != 1.0
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = PPO.load_from_checkpoint(path)
    for name, value in model.state_dict().items():
        if "rms" in name:
            assert torch.equal(value, loaded.state_dict()[name]), name
    before = {k: v.clone() for k, v in loaded.state_dict().items() if "rms" in k}
    lp.evaluate(loaded, n_episodes=2)
    loaded.predict(np.ones((5, 3), np.float32))
    assert all(torch.equal(before[k], loaded.state_dict()[k]) for k in before)  # frozen outside training
    obs = np.array([[0.5, -0.5, 1.0]], np.float32)
    with torch.no_grad():  # predict normalizes with the saved statistics
        expected = loaded.policy.dist(obs_rms.normalize(torch.as_tensor(obs))).mode().clamp(-2, 2)
    np.testing.assert_allclose(loaded.predict(obs), expected.numpy(), rtol=1e-5)


def test_exported_policy_matches_eager_predict(tmp_path):
    model = PPO(env_id="Pendulum-v1", normalize_obs=True, num_envs=2, n_steps=32, batch_size=64)
    model.make_data().collect()  # moves the normalization statistics off their initial values
    obs = torch.randn(6, 3)
    exported = torch.export.export(model.eval(), (obs,))
    np.testing.assert_allclose(exported.module()(obs).detach().numpy(), model.predict(obs.numpy()), rtol=1e-5)
    scripted = model.to_torchscript(method="trace", example_inputs=obs)
    np.testing.assert_allclose(scripted(obs).detach().numpy(), model.predict(obs.numpy()), rtol=1e-5)


def test_pixel_observations_get_a_cnn_and_train(tmp_path):
    model = PPO(env_id="tests.envs:PixelCartPole", num_envs=2, n_steps=16, batch_size=16, n_epochs=1,
                total_timesteps=64, eval_every=-1)
    assert type(model.policy.body.pi[0]).__name__ == "NatureCNN"
    before = [p.detach().clone() for p in model.parameters()]
    _fit(model, tmp_path)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert model.predict(np.zeros((64, 64, 3), np.uint8)).shape == ()


def test_resume_continues_the_schedules_and_counters(tmp_path):
    args = ("--model.total_timesteps=8192", "--model.eval_every=-1", "--model.log_every=256")
    logger = csv_logger(tmp_path)
    first = run_cli(*args, "--trainer.max_steps=320", config="configs/ppo_cartpole.yaml", root=tmp_path, logger=logger)
    assert first.returncode == 0, first.stderr[-2000:]
    stopped = ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")
    assert stopped["lightning_pg"]["num_timesteps"] == 4096 and stopped["global_step"] == 320
    second = run_cli(*args, "--ckpt_path=last", config="configs/ppo_cartpole.yaml", root=tmp_path, logger=logger)
    assert second.returncode == 0, second.stderr[-2000:]
    done = ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")
    assert done["lightning_pg"]["num_timesteps"] == 8192 and done["global_step"] == 640
    rows = [r for r in csv_rows(tmp_path)[1] if "ppo/learning_rate" in r]
    first_row = rows[0]
    steps = int(float(first_row["time/env_steps"]))
    assert steps == 4096 + 256
    # the linear schedules continued from where they stopped (lin_1e-3 and lin_0.2 over 8192 steps, evaluated
    # after each rollout as SB3 does), not from their start
    assert float(first_row["ppo/learning_rate"]) == pytest.approx(1e-3 * (1 - steps / 8192), rel=1e-6)
    assert float(first_row["ppo/clip_range"]) == pytest.approx(0.2 * (1 - steps / 8192), rel=1e-6)


def test_target_kl_stops_the_epochs_early(tmp_path):
    full = dict(env_id="CartPole-v1", num_envs=4, n_steps=32, batch_size=32, n_epochs=10, total_timesteps=256,
                eval_every=-1, learning_rate=3e-3)
    pl.seed_everything(0)
    assert _fit(PPO(**full), tmp_path).global_step == 2 * 10 * 4
    pl.seed_everything(0)
    early = _fit(PPO(target_kl=1e-4, **full), tmp_path).global_step
    assert 2 <= early < 2 * 10 * 4  # at least the first minibatch of each rollout, then it stops




# ---- one objective, under autograd: every update is the plain-autograd reference's ---------------------------
# Each case switches every loss term on (entropy bonus, value clipping, advantage normalization) and records a
# step where some ratios are clipped; it runs on every path: direct optimizer steps or Lightning's public API,
# the fused tanh body or plain autograd ops (rollouts of >= 128 rows, so the fused body applies).
ALL_TERMS = dict(ent_coef=0.01, learning_rate=3e-3, total_timesteps=10**6, eval_every=-1)
UPDATE_CASES = {
    "ppo_categorical": (PPO, dict(env_id="CartPole-v1", num_envs=8, n_steps=32, batch_size=256, n_epochs=8,
                                  clip_range=0.1, clip_range_vf=0.01), 6, ppo_objective),
    "ppo_gaussian": (PPO, dict(env_id="Pendulum-v1", num_envs=4, n_steps=64, batch_size=128, n_epochs=4,
                               clip_range=0.1, clip_range_vf=0.01, log_std_init=-0.5), 5, ppo_objective),
    "a2c_categorical": (A2C, dict(env_id="CartPole-v1", num_envs=8, n_steps=16, normalize_advantage=True), 2,
                        a2c_objective),
    "a2c_gaussian_relu": (A2C, dict(env_id="Pendulum-v1", num_envs=8, n_steps=16, activation="relu"), 2,
                          a2c_objective),
}


@pytest.fixture(params=["direct", "lightning"])
def step_path(request, monkeypatch):
    monkeypatch.setattr(OptimizerSteps, "direct_enabled", request.param == "direct")
    return request.param


@pytest.fixture(params=["fused", "autograd_ops"])
def body_path(request, monkeypatch):
    monkeypatch.setattr(StackedMLP, "fused", request.param == "fused")
    return request.param


def _check_update(cls, kwargs, step, objective, step_path, extra=None, forward=standard_forward):
    pl.seed_everything(0)
    model = cls(**{**ALL_TERMS, **kwargs})
    record = record_step(model, step)
    assert record["direct"] == (step_path == "direct")
    activation = model.hparams.activation
    expected, dist = reference_gradient(model, record, objective, extra=extra,
                                        forward=lambda p, o: forward(p, o, activation) if forward is standard_forward
                                        else forward(p, o))
    if objective is ppo_objective:  # the clipped regime is exercised
        ratio = torch.exp(reference_log_prob(dist, record["batch"]["actions"]) - record["batch"]["log_probs"])
        assert ((ratio - 1).abs() > model.hparams.clip_range).any()
    assert_gradients_match(record, expected)
    return model


@pytest.mark.parametrize("case", list(UPDATE_CASES))
def test_every_update_follows_the_plain_autograd_reference(case, step_path, body_path):
    cls, kwargs, step, objective = UPDATE_CASES[case]
    _check_update(cls, kwargs, step, objective, step_path)


def _logit_penalty(dist):
    """A researcher's extra term on the policy's outputs: the Gaussian mean, or the log-probabilities."""
    if isinstance(dist, torch.distributions.Categorical):
        return 0.3 * dist.logits.square().mean()
    return 0.3 * dist.mean.square().mean()


class OutputPenalty:
    """A researcher's extra loss term, as a mixin over any on-policy algorithm: a penalty on the policy's outputs."""

    def loss(self, batch):
        losses = super().loss(batch)
        dist = self.policy.dist(batch["obs"])
        outputs = dist.log_probs if isinstance(dist, lp.networks.Categorical) else dist.mean
        return {**losses, "loss_output_penalty": 0.3 * outputs.square().mean()}


class PenalizedPPO(OutputPenalty, PPO):
    pass


class PenalizedA2C(OutputPenalty, A2C):
    pass


@pytest.mark.parametrize("cls, case", [(PenalizedPPO, "ppo_categorical"), (PenalizedPPO, "ppo_gaussian"),
                                       (PenalizedA2C, "a2c_categorical"), (PenalizedA2C, "a2c_gaussian_relu")])
def test_a_subclass_that_adds_a_loss_term_trains_on_it_on_every_path(cls, case, step_path, body_path):
    _, kwargs, step, objective = UPDATE_CASES[case]
    _check_update(cls, kwargs, step, objective, step_path, extra=lambda dist, values, batch: _logit_penalty(dist))


class HuberValuePPO(PPO):
    def value_loss(self, values, batch):
        return self.hparams.vf_coef * F.smooth_l1_loss(values, batch["returns"])


def test_a_subclass_that_replaces_the_value_loss_trains_on_it(step_path, body_path):
    _, kwargs, step, _ = UPDATE_CASES["ppo_categorical"]
    kwargs = {**kwargs, "clip_range_vf": None}

    def objective(hp, dist, values, mb):  # PPO's with the Huber value loss in place of the squared error
        without_value = ppo_objective({**hp, "vf_coef": 0.0}, dist, values, mb)
        return without_value + hp["vf_coef"] * F.smooth_l1_loss(values, mb["returns"].double())

    _check_update(HuberValuePPO, kwargs, step, objective, step_path)


class SharedTrunk(nn.Module):
    """A custom body: one trunk whose features feed both heads."""

    def __init__(self, in_features, width):
        super().__init__()
        self.trunk = nn.Linear(in_features, width)
        self.out_features = width

    def forward(self, x):
        features = torch.nn.functional.softplus(self.trunk(x.float()))
        return features, features


class SharedTrunkPPO(PPO):
    def make_policy(self):
        policy = ActorCritic(SharedTrunk(4, 32), CategoricalHead(32, 2), Linear(32, None), None)
        policy.orthogonal_init()
        return policy


def _shared_trunk_forward(params, obs):
    features = F.softplus(obs.double() @ params["body.trunk.weight"].T + params["body.trunk.bias"])
    logits = features @ params["pi_head.weight"] + params["pi_head.bias"]
    return torch.distributions.Categorical(logits=logits), features @ params["v_head.weight"] + params["v_head.bias"]


def test_a_policy_with_a_custom_body_trains_through_it_and_acts_with_it(step_path):
    _, kwargs, step, objective = UPDATE_CASES["ppo_categorical"]
    kwargs = {**kwargs, "clip_range": 0.002}  # this small body moves less: a narrow clip range still clips
    model = _check_update(SharedTrunkPPO, kwargs, step, objective, step_path, forward=_shared_trunk_forward)
    assert isinstance(model.rollout_actor(), TorchActor)  # the numpy actor mirrors only the standard policy


def test_loss_returns_the_same_terms_on_every_step(tmp_path):
    keys = []
    model = PPO(env_id="CartPole-v1", num_envs=2, n_steps=32, batch_size=16, total_timesteps=640, eval_every=-1,
                log_every=320, ent_coef=0.01)
    original = model.loss

    def loss(mb):
        losses = original(mb)
        keys.append(tuple(losses))
        return losses

    model.loss = loss
    _fit(model, tmp_path)
    assert len(keys) == 10 * 4 * 10 and set(keys) == {("loss_policy", "loss_value", "loss_entropy")}


# ---- the fast paths, each against its plain counterpart ------------------------------------------------------
@pytest.mark.parametrize("x_needs_grad", [False, True])
def test_fused_tanh_body_passes_gradcheck(x_needs_grad):
    torch.manual_seed(0)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=x_needs_grad)
    weights = [torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True),
               torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)]
    biases = [torch.randn(2, 1, 5, dtype=torch.float64, requires_grad=True),
              torch.randn(2, 1, 4, dtype=torch.float64, requires_grad=True)]
    assert torch.autograd.gradcheck(_TanhMLPFunction.apply, (x, *weights, *biases))


def test_stacked_body_is_separate_mlps_and_fused_equals_autograd_ops(monkeypatch):
    torch.manual_seed(0)
    body = StackedMLP(4, [64, 64], "tanh", 2)
    x = torch.randn(256, 4)
    assert body._fuses(x)
    outputs, grads, weight = {}, {}, torch.randn(2, 256, 64)
    for fused in (True, False):
        monkeypatch.setattr(StackedMLP, "fused", fused)
        out = body(x)
        grads[fused] = torch.autograd.grad((out * weight).sum(), list(body.parameters()))
        outputs[fused] = out.detach()
    torch.testing.assert_close(outputs[True], outputs[False], rtol=1e-6, atol=1e-6)
    for a, b in zip(grads[True], grads[False]):  # (sums over 256 rows: float32 rounding in another order)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for m in range(2):  # member m is an ordinary tanh MLP with its own weights
        h = x
        for w, b in zip(body.weights, body.biases):
            h = torch.tanh(h @ w[m] + b[m])
        torch.testing.assert_close(outputs[False][m], h.detach())


@pytest.mark.parametrize("env_id, activation", [("CartPole-v1", "tanh"), ("Pendulum-v1", "relu")])
def test_numpy_acting_draws_the_torch_policys_actions_log_probs_and_values(env_id, activation):
    """Rollouts on the CPU sample in numpy: from the same RNG state, the same actions, log-probs and values."""
    model = PPO(env_id=env_id, num_envs=16, activation=activation, log_std_init=-0.5)
    obs = np.stack([model.observation_space.sample() for _ in range(16)])
    assert NumpyActor.mirrors(model.policy)
    torch.manual_seed(1)
    _, actions, log_probs, values = NumpyActor(model.policy).act(obs)
    after_numpy = torch.rand(())
    torch.manual_seed(1)
    _, expected, expected_log_probs, expected_values = TorchActor(model.policy, torch.device("cpu")).act(obs)
    assert torch.rand(()) == after_numpy  # the same random draws consumed: seeding and resume behave alike
    assert actions.dtype == expected.numpy().dtype and actions.shape == expected.shape
    np.testing.assert_allclose(actions, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_probs, expected_log_probs.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(values, expected_values.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(NumpyActor(model.policy).value(obs), expected_values.numpy(), rtol=1e-5, atol=1e-6)


class ScaledLogitsHead(CategoricalHead):
    def forward(self, features):
        return lp.networks.Categorical(2.0 * Linear.forward(self, features))


def test_numpy_acting_mirrors_only_the_exact_standard_policy():
    model = PPO(env_id="CartPole-v1", num_envs=2)
    assert NumpyActor.mirrors(model.policy) and isinstance(model.rollout_actor(), NumpyActor)
    subclassed = PPO(env_id="CartPole-v1", num_envs=2)
    subclassed.policy.__class__ = type("MyActorCritic", (ActorCritic,), {})  # e.g. an overridden dist()
    other_head = PPO(env_id="CartPole-v1", num_envs=2)
    other_head.policy.pi_head.__class__ = ScaledLogitsHead
    normalized = PPO(env_id="CartPole-v1", num_envs=2, normalize_obs=True)
    for model in (subclassed, other_head, normalized, PPO(env_id="CartPole-v1", num_envs=2, activation="elu")):
        assert not NumpyActor.mirrors(model.policy) and isinstance(model.rollout_actor(), TorchActor)
    # and what the module acts with is what trains: a changed head's actions come from the changed head
    obs = np.zeros((2000, 4), np.float32)
    with torch.no_grad():
        other_head.policy.pi_head.bias.copy_(torch.tensor([0.5, -0.5]))
    _, actions, _, _ = other_head.rollout_actor().act(obs)
    assert abs((actions == 0).float().mean().item() - torch.sigmoid(torch.tensor(2.0)).item()) < 0.03


def test_numpy_acting_follows_parameters_replaced_by_load_state_dict_assign(tmp_path):
    """The numpy views are taken per rollout: weights swapped in as new Parameter objects are the ones acted with."""
    model = PPO(env_id="CartPole-v1", num_envs=2, n_steps=16, batch_size=32, total_timesteps=64, eval_every=-1)
    _fit(model, tmp_path)
    other = PPO(env_id="CartPole-v1", num_envs=2)
    with torch.no_grad():
        other.policy.pi_head.bias.copy_(torch.tensor([3.0, -3.0]))
    model.load_state_dict(other.state_dict(), assign=True)
    _, actions, _, _ = model.rollout_actor().act(np.zeros((64, 4), np.float32))
    assert (actions == 0).mean() > 0.9  # the new head prefers action 0 (p ≈ 0.998)


def test_numpy_rollouts_build_the_batch_the_torch_path_builds(monkeypatch):
    """CPU rollouts stay in numpy (acting, values, GAE): the same batches as torch's, time-limit cuts included."""
    batches = {}
    for in_numpy in (True, False):
        monkeypatch.setattr(NumpyActor, "enabled", in_numpy)
        torch.manual_seed(0)
        model = A2C(env_id="CartPole-v1", num_envs=4, n_steps=8, gamma=0.9, gae_lambda=0.8,
                    env_kwargs={"max_episode_steps": 6})
        assert isinstance(model.rollout_actor(), NumpyActor if in_numpy else TorchActor)
        data = model.make_data()
        batches[in_numpy] = [data.collect() for _ in range(3)]
    assert sum(len(b["episode_returns"]) for b in batches[True]) >= 8  # cut every 6 steps: cuts were bootstrapped
    for got, expected in zip(batches[True], batches[False]):
        for key in ("obs", "actions", "log_probs", "values", "advantages", "returns"):
            assert got[key].dtype == expected[key].dtype, key
            torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got["episode_returns"], expected["episode_returns"])


def test_direct_optimizer_steps_train_as_lightnings_public_path(tmp_path, monkeypatch):
    """The bypass in optimizer_steps.py and its fallback: the same weights and step counts after 4 PPO rollouts."""
    results = {}
    for direct in (True, False):
        monkeypatch.setattr(OptimizerSteps, "direct_enabled", direct)
        pl.seed_everything(0)
        model = PPO(env_id="CartPole-v1", num_envs=4, n_steps=32, batch_size=64, n_epochs=10, total_timesteps=512,
                    eval_every=-1, ent_coef=0.01)
        trainer = _fit(model, tmp_path)
        assert model._optimizer_steps.direct == direct
        results[direct] = (trainer.global_step, torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert results[True][0] == results[False][0] == 4 * 10 * 2
    torch.testing.assert_close(results[True][1], results[False][1], rtol=1e-4, atol=1e-5)


class CountsOptimizerSteps(pl.Callback):
    def __init__(self):
        self.calls = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.calls += 1


class ClipsInItsOwnWay(A2C):
    def on_after_backward(self):
        self.after_backward = getattr(self, "after_backward", 0) + 1


def test_hooks_the_public_path_would_call_are_called(tmp_path):
    """A callback or module hook around backward or step takes Lightning's path, and runs on every step."""
    counter = CountsOptimizerSteps()
    model = A2C(env_id="CartPole-v1", num_envs=4, n_steps=5, total_timesteps=200, eval_every=-1)
    trainer = _fit(model, tmp_path, callbacks=[counter])
    assert not model._optimizer_steps.direct and counter.calls == trainer.global_step == 10
    module = ClipsInItsOwnWay(env_id="CartPole-v1", num_envs=4, n_steps=5, total_timesteps=200, eval_every=-1)
    _fit(module, tmp_path)
    assert not module._optimizer_steps.direct and module.after_backward == 10
    plain = A2C(env_id="CartPole-v1", num_envs=4, n_steps=5, total_timesteps=200, eval_every=-1)
    _fit(plain, tmp_path)
    assert plain._optimizer_steps.direct


@pytest.mark.parametrize("algo", [A2C, PPO])
def test_a_non_finite_gradient_between_logged_batches_stops_training(tmp_path, algo):
    model = algo(env_id="tests.envs:HugeRewardAfter", env_kwargs={"steps": 300}, num_envs=2, total_timesteps=20_000,
                 eval_every=-1, log_every=100_000, max_grad_norm=None)
    with pytest.raises(lp.TrainingDiverged, match="loss/value=(inf|nan)"):
        _fit(model, tmp_path)
    assert 300 * 2 <= model.num_timesteps < 20_000


class AlwaysLeft(PPO):
    def act(self, obs, deterministic=False):  # e.g. action masking, added where users add it
        return torch.zeros(len(obs), dtype=torch.long)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_predict_acts_in_numpy_exactly_as_act_does(env_id):
    model = PPO(env_id=env_id, num_envs=2, log_std_init=-0.5)
    obs = np.stack([model.observation_space.sample() for _ in range(64)])
    for deterministic in (True, False):
        torch.manual_seed(3)
        got = model.predict(obs, deterministic=deterministic)
        torch.manual_seed(3)
        with torch.no_grad():
            expected = model.env_actions(model.act(torch.as_tensor(obs), deterministic))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert (AlwaysLeft(env_id="CartPole-v1", num_envs=2).predict(np.ones((9, 4), np.float32)) == 0).all()


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "tests.envs:PixelCartPole"])
def test_acting_computes_the_policy_alone_and_the_same_distribution(env_id):
    """policy_dist skips V(x) (the stacked MLP's member 0, the twin CNNs' policy one): the distribution it gives
    is dist's, and a policy class that overrides dist is acted with through its own."""
    model = PPO(env_id=env_id, num_envs=2, n_steps=16, batch_size=32)
    obs = torch.as_tensor(np.stack([model.observation_space.sample() for _ in range(32)]))
    with torch.no_grad():
        x = model.policy.normalize(obs)
        full, alone = model.policy.dist(x), model.policy.policy_dist(x)
    for a, b in ((full.mode(), alone.mode()), (full.entropy(), alone.entropy())):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)

    class FirstActionOnly(type(model.policy)):  # e.g. a mask the user adds to the distribution
        def dist(self, x):
            d = super().dist(x)
            if hasattr(d, "log_probs"):
                d.log_probs = d.log_probs + torch.tensor([0.0, -1e9])
            return d

    model.policy.__class__ = FirstActionOnly
    if model.action_low is None:
        assert (model(obs) == 0).all() and (model.predict(obs.numpy()) == 0).all()
    model.policy.__class__ = ActorCritic
    seen = []  # a forward hook on the body (e.g. recording features): acting runs the whole body, through it
    model.policy.body.register_forward_hook(lambda module, args, out: seen.append(module))
    model.predict(obs.numpy())
    assert seen == [model.policy.body]


def test_fused_tanh_body_has_exact_second_derivatives(monkeypatch):
    """A gradient penalty or a Hessian-vector product (TRPO's) differentiates the body twice: exact on both paths."""
    torch.manual_seed(0)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    params = [torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True),
              torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True),
              torch.randn(2, 1, 4, dtype=torch.float64, requires_grad=True),
              torch.randn(2, 1, 2, dtype=torch.float64, requires_grad=True)]
    assert torch.autograd.gradgradcheck(_TanhMLPFunction.apply, (x, *params))
    model = PPO(env_id="CartPole-v1", num_envs=2)
    obs = torch.randn(256, 4, requires_grad=True)
    grads = {}
    for fused in (True, False):
        monkeypatch.setattr(StackedMLP, "fused", fused)
        assert model.policy.body._fuses(obs) == fused
        _, values = model.policy(obs)
        (d_obs,) = torch.autograd.grad(values.sum(), obs, create_graph=True)
        grads[fused] = torch.autograd.grad(d_obs.square().sum(), list(model.policy.body.parameters()))
    for a, b in zip(grads[True], grads[False]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_under_autocast_values_stay_float32_and_rollouts_act_through_the_module():
    model = PPO(env_id="CartPole-v1", num_envs=2)
    with torch.autocast("cpu", torch.bfloat16):
        _, values = model.policy(torch.randn(8, 4))
        assert values.dtype == torch.float32  # GAE and the value regression see float32 values
        assert not NumpyActor.mirrors(model.policy) and isinstance(model.rollout_actor(), TorchActor)
    assert NumpyActor.mirrors(model.policy)


@pytest.mark.parametrize("precision", ["64-true", "bf16-true", "bf16-mixed"])
@pytest.mark.parametrize("algo, kwargs", [
    (PPO, dict(env_id="Pendulum-v1", num_envs=2, n_steps=64, batch_size=64, normalize_obs=True)),
    (A2C, dict(env_id="CartPole-v1", num_envs=4)),
    (lp.REINFORCE, dict(env_id="CartPole-v1", num_envs=2)),
    (PPO, dict(env_id="Pendulum-v1", num_envs=2, n_steps=64, batch_size=64, use_sde=True, sde_sample_freq=4)),
    (lp.TRPO, dict(env_id="Pendulum-v1", num_envs=2, n_steps=64, batch_size=64, use_sde=True)),
])
def test_every_precision_trains(tmp_path, precision, algo, kwargs):
    model = algo(total_timesteps=400, eval_every=200, eval_episodes=1, **kwargs)
    before = [p.detach().clone() for p in model.parameters()]
    _fit(model, tmp_path, precision=precision)
    assert model.num_timesteps >= 400 and model.last_eval is not None
    assert any(not torch.equal(a.float(), b.float()) for a, b in zip(before, model.parameters()))
    assert all(torch.isfinite(p).all() for p in model.parameters())


class RecordsRolloutLogProbs:
    """Before each update: the rollout's stored log-probs, and those of its actions under the policy as it is now
    (after the previous update) and as it was at the start."""

    def update(self, batch):
        with torch.no_grad():
            now = self.policy.dist(batch["obs"]).log_prob(batch["actions"])
            at_start = self.record["initial"].dist(batch["obs"]).log_prob(batch["actions"])
        self.record["seen"].append((batch["log_probs"].clone(), now, at_start))
        return super().update(batch)


class RecordingPPO(RecordsRolloutLogProbs, PPO):
    pass


class RecordingA2C(RecordsRolloutLogProbs, A2C):
    pass


@pytest.mark.parametrize("cls, kwargs", [
    (RecordingPPO, {"n_steps": 32, "batch_size": 64, "n_epochs": 4}),
    (RecordingA2C, {"n_steps": 8}),
])
def test_each_rollout_is_played_by_the_policy_of_the_latest_update(tmp_path, cls, kwargs):
    """On-policy data: the log-probs a rollout stores are those of the weights after the previous update, on the
    numpy acting path (whose views of the weights must follow every optimizer step), with no rollout fetched
    ahead of an update."""
    pl.seed_everything(0)
    model = cls(env_id="CartPole-v1", num_envs=4, learning_rate=3e-3, total_timesteps=6 * 4 * kwargs["n_steps"],
                eval_every=-1, **kwargs)
    model.record = {"initial": copy.deepcopy(model.policy), "seen": []}  # (a dict: not a submodule to train)
    assert isinstance(model.rollout_actor(), NumpyActor)
    _fit(model, tmp_path)
    seen = model.record["seen"]
    assert len(seen) == 6
    for stored, now, _ in seen:
        torch.testing.assert_close(stored, now, rtol=1e-5, atol=1e-5)
    for stored, _, at_start in seen[1:]:  # the updates moved the policy: stale weights would show
        assert (stored - at_start).abs().max() > 1e-3
