"""A2C and PPO: rollouts, GAE through cuts, action storage, normalization, schedules, update counts, export."""
import numpy as np
import pytest
import pytorch_lightning as pl
import torch

import lightning_pg as lp
from lightning_pg import A2C, PPO
from tests.envs import RecordActions
from tests.helpers import ckpt_state, csv_logger, csv_rows, run_cli


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


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_ppo_surrogate_equals_the_textbook_min_of_clipped_and_unclipped(env_id):
    """PPO's loss clamps r to per-sample bounds; the paper's min(r·A, clip(r)·A) must give the same numbers."""
    torch.manual_seed(0)
    model = PPO(env_id=env_id, num_envs=2, n_steps=64, batch_size=128, n_epochs=1)
    batch = model.make_data().collect()
    batch["log_probs"] = batch["log_probs"] + 0.4 * torch.randn(128)  # ratios well inside and outside [0.8, 1.2]
    batch["advantages"][:5] = 0.0
    clip = 0.2
    mb = next(model.minibatches(batch, clip))
    ours = model.loss(mb, clip, None)["loss_policy"]
    without_bounds = {k: v for k, v in mb.items() if not k.startswith("ratio_")}  # loss() makes them when missing
    torch.testing.assert_close(model.loss(without_bounds, clip, None)["loss_policy"], ours)
    grads_ours = torch.autograd.grad(ours, list(model.policy.parameters()), allow_unused=True)
    ratio = torch.exp(model.policy.dist(mb["obs"]).log_prob(mb["actions"]) - mb["log_probs"])
    adv = mb["advantages"]
    textbook = -torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean()
    grads_textbook = torch.autograd.grad(textbook, list(model.policy.parameters()), allow_unused=True)
    assert 0.1 < ((ratio - 1).abs() > clip).float().mean() < 0.9  # both regimes are exercised
    torch.testing.assert_close(ours, textbook)
    for a, b in zip(grads_ours, grads_textbook):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)


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
    assert type(model.policy.pi_body[0]).__name__ == "NatureCNN"
    before = [p.detach().clone() for p in model.parameters()]
    _fit(model, tmp_path)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert model.predict(np.zeros((64, 64, 3), np.uint8)).shape == ()


def test_resume_continues_the_schedules_and_counters(tmp_path):
    args = ("--model.total_timesteps=8192", "--model.eval_every=-1", "--model.log_every=256")
    logger = csv_logger(tmp_path)
    first = run_cli(*args, "--trainer.max_steps=320", config="configs/ppo_cartpole.yaml", root=tmp_path, logger=logger)
    assert first.returncode == 0, first.stderr[-2000:]
    stopped = ckpt_state(tmp_path / "checkpoints" / "last.ckpt")
    assert stopped["lightning_pg"]["num_timesteps"] == 4096 and stopped["global_step"] == 320
    second = run_cli(*args, "--ckpt_path=last", config="configs/ppo_cartpole.yaml", root=tmp_path, logger=logger)
    assert second.returncode == 0, second.stderr[-2000:]
    done = ckpt_state(tmp_path / "checkpoints" / "last.ckpt")
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


def _gradients_both_ways(model, batch, **loss_kwargs):
    """(loss terms, gradient of every parameter) by autograd and by the hand-written backward."""
    params = list(model.policy.parameters())
    model.zero_grad(set_to_none=True)
    losses = model.loss(batch, **loss_kwargs)
    sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
    autograd = [p.grad.clone() for p in params]
    for p in params:
        p.grad = torch.full_like(p, float("nan"))  # every entry must be written
    dist, values, saved = model.policy.forward_saving(batch["obs"])
    by_hand_losses, (d_log_prob, d_value, d_entropy) = model.loss_terms(batch, dist, values, **loss_kwargs)
    model.policy.backward_by_hand(dist, saved, batch["actions"], d_log_prob, d_value, d_entropy)
    return losses, by_hand_losses, autograd, [p.grad.clone() for p in params]


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("algo, extra", [
    ("ppo", {}), ("ppo", {"ent_coef": 0.01, "clip_range_vf": 0.05}), ("a2c", {}),
    ("a2c", {"ent_coef": 0.01, "normalize_advantage": True}),
])
def test_backward_by_hand_gives_autograds_gradients(env_id, activation, algo, extra):
    torch.manual_seed(0)
    if algo == "ppo":
        model = PPO(env_id=env_id, num_envs=2, n_steps=64, batch_size=128, activation=activation, **extra)
        batch = model.make_data().collect()
        batch["log_probs"] = batch["log_probs"] + 0.3 * torch.randn(128)  # clipped and unclipped ratios
        with torch.no_grad():
            batch["values"] = model.policy.value(batch["obs"]) + 0.1 * torch.randn(128)  # some values clipped
        batch = next(model.minibatches(batch, 0.2))
        kwargs = {"clip": 0.2, "clip_vf": extra.get("clip_range_vf")}
    else:
        model = A2C(env_id=env_id, num_envs=4, n_steps=8, activation=activation, **extra)
        batch, kwargs = model.make_data().collect(), {}
    model.log_due = True
    assert model.policy.has_backward_by_hand
    losses, by_hand_losses, autograd, by_hand = _gradients_both_ways(model, batch, **kwargs)
    assert losses.keys() == by_hand_losses.keys()
    for key in losses:
        torch.testing.assert_close(by_hand_losses[key], losses[key])
    for a, b in zip(autograd, by_hand):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_backward_by_hand_is_used_in_training_and_trains_like_autograd(tmp_path):
    """Same seed, same settings: weights after 4 PPO rollouts (80 gradient steps) agree with autograd's."""
    weights = {}
    for by_hand in (True, False):
        pl.seed_everything(0)
        model = PPO(env_id="CartPole-v1", num_envs=4, n_steps=32, batch_size=64, n_epochs=10, total_timesteps=512,
                    eval_every=-1)
        model.backward_by_hand = by_hand
        _fit(model, tmp_path)
        assert model._by_hand == by_hand
        weights[by_hand] = torch.cat([p.detach().reshape(-1) for p in model.policy.parameters()])
    torch.testing.assert_close(weights[True], weights[False], rtol=1e-4, atol=1e-5)
    assert not PPO(env_id="tests.envs:PixelCartPole", num_envs=1).policy.has_backward_by_hand  # CNN: autograd


@pytest.mark.parametrize("env_id, activation", [("CartPole-v1", "tanh"), ("Pendulum-v1", "relu")])
def test_numpy_acting_draws_the_torch_policys_actions_and_log_probs(env_id, activation):
    """Rollouts on the CPU sample in numpy: from the same RNG state, the same actions and log-probs as torch."""
    model = PPO(env_id=env_id, num_envs=16, activation=activation, log_std_init=-0.5)
    obs = np.stack([model.observation_space.sample() for _ in range(16)])
    torch.manual_seed(1)
    actions, log_probs = model.policy.numpy_actor()(obs)
    after_numpy = torch.rand(())
    torch.manual_seed(1)
    with torch.no_grad():
        dist = model.policy.dist(torch.from_numpy(obs))
        expected = dist.sample()
        expected_log_probs = dist.log_prob(expected)
    assert torch.rand(()) == after_numpy  # the same random draws consumed: seeding and resume behave alike
    assert actions.dtype == expected.numpy().dtype and actions.shape == expected.shape
    np.testing.assert_allclose(actions, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_probs, expected_log_probs.numpy(), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        expected_values = model.policy.value(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(model.policy.numpy_actor().values(obs), expected_values, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("algo", [A2C, PPO])
def test_by_hand_updates_stop_on_a_non_finite_gradient_between_logged_batches(tmp_path, algo):
    """The by-hand update computes loss values only for logged batches; every step's gradient norm is checked."""
    model = algo(env_id="tests.envs:HugeRewardAfter", env_kwargs={"steps": 300}, num_envs=2, total_timesteps=20_000,
                 eval_every=-1, log_every=100_000, max_grad_norm=None)
    with pytest.raises(lp.TrainingDiverged, match="grad_norm=(inf|nan)"):
        _fit(model, tmp_path)
    assert model._by_hand and 300 * 2 <= model.num_timesteps < 20_000


def test_numpy_acting_follows_parameters_replaced_by_load_state_dict_assign(tmp_path):
    """The numpy views are taken per rollout: weights swapped in as new Parameter objects are the ones acted with."""
    model = PPO(env_id="CartPole-v1", num_envs=2, n_steps=16, batch_size=32, total_timesteps=64, eval_every=-1)
    _fit(model, tmp_path)
    other = PPO(env_id="CartPole-v1", num_envs=2)
    with torch.no_grad():
        other.policy.pi_head.bias.copy_(torch.tensor([3.0, -3.0]))
    model.load_state_dict(other.state_dict(), assign=True)
    obs = np.zeros((64, 4), np.float32)
    actions, _ = model.policy.numpy_actor()(obs)
    assert (actions == 0).mean() > 0.9  # the new head prefers action 0 (p ≈ 0.998)


def test_numpy_rollouts_build_the_batch_the_torch_path_builds():
    """CPU rollouts stay in numpy (acting, values, GAE): the same batches as torch's, time-limit cuts included."""
    batches = {}
    for in_numpy in (True, False):
        torch.manual_seed(0)
        model = A2C(env_id="CartPole-v1", num_envs=4, n_steps=8, gamma=0.9, gae_lambda=0.8,
                    env_kwargs={"max_episode_steps": 6})
        model.acts_in_numpy = in_numpy
        data = model.make_data()
        batches[in_numpy] = [data.collect() for _ in range(3)]
    assert sum(len(b["episode_returns"]) for b in batches[True]) >= 8  # cut every 6 steps: cuts were bootstrapped
    for got, expected in zip(batches[True], batches[False]):
        for key in ("obs", "actions", "log_probs", "values", "advantages", "returns"):
            assert got[key].dtype == expected[key].dtype, key
            torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got["episode_returns"], expected["episode_returns"])


def test_training_acts_in_numpy_only_where_the_policy_allows(tmp_path):
    plain = PPO(env_id="CartPole-v1", num_envs=2, n_steps=16, batch_size=32, total_timesteps=64, eval_every=-1)
    normalized = PPO(env_id="CartPole-v1", num_envs=2, n_steps=16, batch_size=32, total_timesteps=64, eval_every=-1,
                     normalize_obs=True)
    _fit(plain, tmp_path)
    _fit(normalized, tmp_path)
    assert plain.acts_in_numpy and not normalized.acts_in_numpy  # running obs statistics update in torch


def test_a_subclass_that_changes_the_loss_trains_with_autograd(tmp_path):
    """The by-hand backward follows loss_terms: overriding loss() alone must not be bypassed silently."""
    class ScaledPPO(PPO):
        def loss(self, mb, clip, clip_vf):
            losses = super().loss(mb, clip, clip_vf)
            return {**losses, "loss_value": 2.0 * losses["loss_value"]}

    kwargs = dict(env_id="CartPole-v1", num_envs=2, n_steps=16, batch_size=32, total_timesteps=32, eval_every=-1)
    scaled, plain = ScaledPPO(**kwargs), PPO(**kwargs)
    _fit(scaled, tmp_path)
    _fit(plain, tmp_path)
    assert not scaled._by_hand and plain._by_hand


def test_grouped_rollouts_still_save_last_ckpt_every_interval(tmp_path):
    """A checkpoint interval shorter than a group ends the group where it is crossed (A2C: 40 steps a batch)."""
    from lightning_pg.callbacks import RLCheckpoint

    a2c = A2C(env_id="CartPole-v1", num_envs=8, n_steps=5, total_timesteps=1200, eval_every=-1)
    saved = []
    checkpoint = RLCheckpoint(every_n_env_steps=100, dirpath=str(tmp_path / "ckpt"), monitor=None)
    original = checkpoint._save_last_checkpoint
    checkpoint._save_last_checkpoint = lambda trainer, candidates: (saved.append(a2c.num_timesteps),
                                                                    original(trainer, candidates))
    pl.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path, accelerator="cpu", max_epochs=-1,
               enable_model_summary=False, callbacks=[checkpoint]).fit(a2c)
    assert saved == [120, 200, 320, 400, 520, 600, 720, 800, 920, 1000, 1120, 1200]
