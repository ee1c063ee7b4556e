"""The shared spine: autoreset and truncation handling, episode statistics, seeding, predict, precision."""
import numpy as np
import pytest
import pytorch_lightning as pl
import torch

import lightning_pg as lp
from lightning_pg import REINFORCE
from lightning_pg.envs import make_vec_env
from lightning_pg.networks import Categorical, DiagGaussian


def _fit(model, tmp_path, **trainer_kwargs):
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         default_root_dir=tmp_path, accelerator="cpu", max_epochs=-1, **trainer_kwargs)
    trainer.fit(model)
    return trainer


def test_time_limit_bootstraps_from_the_true_final_observation():
    """Pitfalls 1 and 2: a truncated episode's last return is r + γ V(final obs), not V(next episode's reset)."""
    torch.manual_seed(0)
    model = REINFORCE(env_id="tests.envs:Counter", env_kwargs={"max_episode_steps": 5}, num_envs=3, gamma=0.9)
    batch = model.make_data().collect()
    assert batch["obs"].shape == (15, 1)  # 3 episodes of exactly 5 steps: the dead step is not there
    with torch.no_grad():
        v_final = model.policy.value(torch.tensor([[0.5]])).item()  # V([5/10]), the true final state
        v_reset = model.policy.value(torch.tensor([[0.0]])).item()
    returns = batch["returns"].view(5, 3)  # time-major: rows are t = 0..4 of all three envs
    expected_last = 1 + 0.9 * v_final
    torch.testing.assert_close(returns[-1], torch.full((3,), expected_last))
    assert abs(expected_last - (1 + 0.9 * v_reset)) > 1e-4  # the test would catch the autoreset bug
    expected_first = sum(0.9**k for k in range(5)) + 0.9**5 * v_final
    torch.testing.assert_close(returns[0], torch.full((3,), expected_first))
    # pitfall 3: episode statistics come through the autoreset mode
    np.testing.assert_array_equal(batch["episode_returns"], [5.0, 5.0, 5.0])
    np.testing.assert_array_equal(batch["episode_lengths"], [5, 5, 5])


def test_open_episodes_statistics_are_part_of_the_saved_iterable_state():
    """A restored iterable reports the episodes that were open at the save with their whole return and length."""
    torch.manual_seed(0)
    model = lp.A2C(env_id="CartPole-v1", num_envs=3, n_steps=7)
    model.trainer = pl.Trainer(logger=False, enable_progress_bar=False, accelerator="cpu")
    data = model.make_data()
    data.collect()  # episodes are open now
    state = data.state_dict()
    later = [data.collect() for _ in range(8)]
    restored = model.make_data()
    restored.load_state_dict(state)
    again = [restored.collect() for _ in range(8)]
    returns = np.concatenate([b["episode_returns"] for b in later])
    assert len(returns) >= 3
    for key in ("episode_returns", "episode_lengths"):
        np.testing.assert_array_equal(np.concatenate([b[key] for b in again]), np.concatenate([b[key] for b in later]))
    np.testing.assert_array_equal(returns, np.concatenate([b["episode_lengths"] for b in later]))


def test_reward_normalization_running_returns_are_part_of_the_saved_iterable_state():
    torch.manual_seed(0)
    model = lp.A2C(env_id="CartPole-v1", num_envs=3, n_steps=7, normalize_reward=True)
    model.trainer = pl.Trainer(logger=False, enable_progress_bar=False, accelerator="cpu")
    data = model.make_data()
    data.collect()
    restored = model.make_data()
    restored.load_state_dict(data.state_dict())
    assert data.reward_scaler.discounted_return.abs().sum() > 0
    torch.testing.assert_close(restored.reward_scaler.discounted_return, data.reward_scaler.discounted_return)


def test_without_baseline_a_cut_is_not_bootstrapped():
    model = REINFORCE(env_id="tests.envs:Counter", env_kwargs={"max_episode_steps": 3}, baseline="none",
                      num_envs=2, gamma=0.5)
    batch = model.make_data().collect()
    torch.testing.assert_close(batch["returns"].view(3, 2)[:, 0], torch.tensor([1.75, 1.5, 1.0]))


def test_same_seed_same_run_different_seed_different_run(tmp_path):
    def final_weights(seed):
        pl.seed_everything(seed)
        model = REINFORCE(env_id="CartPole-v1", total_timesteps=3000, eval_every=-1, num_envs=4)
        _fit(model, tmp_path)
        return torch.cat([p.detach().flatten() for p in model.parameters()]), model.num_timesteps

    (a, steps_a), (b, steps_b), (c, _) = final_weights(3), final_weights(3), final_weights(4)
    assert torch.equal(a, b) and steps_a == steps_b
    assert not torch.equal(a, c)


def test_each_env_and_the_action_sampler_are_seeded():
    envs = make_vec_env("CartPole-v1", None, num_envs=4, seed=7)
    obs, _ = envs.reset(seed=7)
    assert len({tuple(o) for o in obs}) == 4  # four different streams
    again = make_vec_env("CartPole-v1", None, num_envs=4, seed=7)
    np.testing.assert_array_equal(again.reset(seed=7)[0], obs)
    samples = [envs.action_space.sample() for _ in range(5)]
    assert all(np.array_equal(s, again.action_space.sample()) for s in samples)


def test_predict_keeps_the_rank_numpy_in_numpy_out():
    model = REINFORCE(env_id="CartPole-v1")
    single = model.predict(np.zeros(4, np.float32))
    batch = model.predict(np.zeros((5, 4), np.float32))
    assert isinstance(single, np.ndarray) and single.shape == () and single.dtype.kind == "i"
    assert batch.shape == (5,)
    pendulum = REINFORCE(env_id="Pendulum-v1")
    assert pendulum.predict(np.zeros(3)).shape == (1,) and pendulum.predict(np.zeros((2, 3))).shape == (2, 1)


def test_evaluate_is_deterministic_and_plays_exactly_n_episodes():
    model = REINFORCE(env_id="tests.envs:Counter", env_kwargs={"max_episode_steps": 7})
    mean, std = lp.evaluate(model, n_episodes=20, seed=0)
    assert (mean, std) == (7.0, 0.0)
    torch.manual_seed(0)
    cartpole = REINFORCE(env_id="CartPole-v1")
    assert lp.evaluate(cartpole, 5, seed=1) == lp.evaluate(cartpole, 5, seed=1)
    state = torch.get_rng_state()
    lp.evaluate(cartpole, 5, seed=1, deterministic=False)
    assert torch.equal(state, torch.get_rng_state())  # evaluation leaves the training RNG alone


# the returns evaluate() must average: one episode per env at 5 (envs 0-4); at 20 on 16 envs, the first four
# play two (their episodes 0 and 1), the other twelve one
QUOTA_RETURNS = {5: [0, 10, 20, 30, 40], 20: [10 * i for i in range(16)] + [1, 11, 21, 31]}


@pytest.mark.parametrize("n_episodes", list(QUOTA_RETURNS))
def test_evaluate_averages_each_envs_quota_of_episodes_when_lengths_differ(n_episodes):
    """tests.envs.SeededLength: eval env i plays episodes of i + 1 steps, its k-th paying 10 i + k. Env 0 ends an
    episode every step, so a short episode counted beyond its env's quota, or a quota given to other envs, moves
    the mean."""
    model = REINFORCE(env_id="tests.envs:SeededLength")
    expected = QUOTA_RETURNS[n_episodes]
    mean, std = lp.evaluate(model, n_episodes=n_episodes, seed=0)
    assert mean == pytest.approx(np.mean(expected)) and std == pytest.approx(np.std(expected))
    assert mean == pytest.approx({5: 20.0, 20: 63.2}[n_episodes])  # (the known answers, worked by hand)


def test_bf16_mixed_precision_on_cpu(tmp_path):
    pl.seed_everything(0)
    model = REINFORCE(env_id="CartPole-v1", total_timesteps=4000, eval_every=-1)
    _fit(model, tmp_path, precision="bf16-mixed")
    assert model.num_timesteps >= 4000
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in model.parameters())


def test_categorical_and_gaussian_match_torch_distributions():
    torch.manual_seed(0)
    logits = torch.randn(6, 3)
    ours, ref = Categorical(logits), torch.distributions.Categorical(logits=logits)
    actions = ref.sample()
    torch.testing.assert_close(ours.log_prob(actions), ref.log_prob(actions))
    torch.testing.assert_close(ours.entropy(), ref.entropy())
    mean, log_std = torch.randn(6, 2), torch.randn(2)
    ours, ref = DiagGaussian(mean, log_std), torch.distributions.Normal(mean, log_std.exp())
    actions = ref.sample()
    torch.testing.assert_close(ours.log_prob(actions), ref.log_prob(actions).sum(-1))
    torch.testing.assert_close(ours.entropy(), ref.entropy().sum(-1))
    samples = DiagGaussian(torch.zeros(20000, 1), torch.tensor([0.5])).sample()
    assert abs(samples.std().item() - np.exp(0.5)) < 0.05


@pytest.mark.parametrize("bad", [{"learning_rate": 0}, {"eval_episodes": 0}, {"network": [64, -1]},
                                 {"baseline": "critic"}, {"ent_coef": -1.0}])
def test_invalid_hyperparameters_raise_config_error(bad):
    with pytest.raises(lp.ConfigError, match="Invalid hyperparameter"):
        REINFORCE(env_id="CartPole-v1", **bad)


def test_reward_scaling_is_vecnormalize_known_answer():
    """Each reward divided by the running std of the discounted return (SB3's VecNormalize(norm_reward=True)),
    against a plain numpy loop; and the rollout's returns come from the scaled rewards."""
    from lightning_pg.data.base import RewardScaler
    from lightning_pg.networks import RunningMeanStd

    rng = np.random.default_rng(0)
    rewards, dones, gamma = rng.normal(3.0, 2.0, (20, 2)), rng.random((20, 2)) < 0.2, 0.9
    scaled = RewardScaler(RunningMeanStd(()), gamma)(torch.as_tensor(rewards, dtype=torch.float32), dones)

    mean, var, count, ret, expected = 0.0, 1.0, 1e-4, np.zeros(2), np.zeros_like(rewards)
    for t in range(20):
        ret = ret * gamma + rewards[t]
        batch_mean, batch_var, n = ret.mean(), ret.var(), len(ret)
        delta, total = batch_mean - mean, count + n
        mean, var = mean + delta * n / total, (var * count + batch_var * n + delta**2 * count * n / total) / total
        count = total
        expected[t] = np.clip(rewards[t] / np.sqrt(var + 1e-8), -10, 10)
        ret[dones[t]] = 0.0
    np.testing.assert_allclose(scaled.numpy(), expected, rtol=1e-5)
    assert not np.allclose(expected, rewards)  # the scaling changes the rewards (std far from 1 here)

    torch.manual_seed(0)
    plain = lp.A2C(env_id="CartPole-v1", num_envs=2, n_steps=8, gamma=0.9).make_data().collect()
    torch.manual_seed(0)
    normalized = lp.A2C(env_id="CartPole-v1", num_envs=2, n_steps=8, gamma=0.9, normalize_reward=True).make_data().collect()
    torch.testing.assert_close(normalized["obs"], plain["obs"])  # the same steps ...
    assert not torch.allclose(normalized["returns"], plain["returns"])  # ... learned from scaled rewards


class RecordsEvaluations(lp.A2C):
    """Keeps each evaluation's env step, mean return and the weights it evaluated."""

    def run_evaluation(self):
        mean, std = super().run_evaluation()
        self.evaluations.append((self.num_timesteps, mean, {k: v.clone() for k, v in self.state_dict().items()}))
        return mean, std


def test_best_ckpt_holds_the_weights_of_the_highest_evaluation(tmp_path):
    from lightning_pg.algorithms.base import EVAL_SEED
    from lightning_pg.callbacks import RLCheckpoint

    pl.seed_everything(1)
    # A2C's 20-step rollouts: a training_step takes several, and must end at an evaluation for best.ckpt to
    # hold the evaluated weights
    model = RecordsEvaluations(env_id="CartPole-v1", num_envs=4, total_timesteps=6000, eval_every=500, eval_episodes=5)
    model.evaluations = []
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         accelerator="cpu", max_epochs=-1, callbacks=[RLCheckpoint(every_n_env_steps=10**9)])
    trainer.fit(model)
    means = [mean for _, mean, _ in model.evaluations]
    best = int(np.argmax(means))
    # the return went up, then down again: neither the first nor the last evaluation is the best
    assert len(means) >= 8 and 0 < best < len(means) - 1 and max(means[best + 1:]) < means[best]

    state = torch.load(tmp_path / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    (callback_state,) = [v for k, v in state["callbacks"].items() if k.startswith("RLCheckpoint")]
    assert float(callback_state["best_model_score"]) == pytest.approx(means[best])
    assert state["lightning_pg"]["num_timesteps"] == model.evaluations[best][0]
    for name, tensor in model.evaluations[best][2].items():  # the very weights that scored best
        assert torch.equal(state["state_dict"][name], tensor), name
    again = lp.A2C(env_id="CartPole-v1")
    again.load_state_dict(state["state_dict"])
    assert lp.evaluate(again, 5, seed=EVAL_SEED)[0] == pytest.approx(means[best])
