"""DDPG, TD3, SAC: targets, time limits, the squashed log-prob, the replay buffer, checkpoints and resume."""
import math

import mpmath
import numpy as np
import pytest
import pytorch_lightning as pl
import torch

import lightning_pg as lp
from lightning_pg import DDPG, SAC, TD3
from lightning_pg.algorithms.off_policy import OffPolicyModule
from lightning_pg.data import ReplayBuffer
from lightning_pg.networks import QCritics, TanhGaussian
from tests.helpers import ckpt_state, csv_logger, csv_rows, data_state, run_cli, run_folder

SMALL = dict(network=[32, 32], batch_size=32, eval_every=-1)


def _fit(model, tmp_path, ckpt_path=None, **trainer_kwargs):
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                         default_root_dir=tmp_path, accelerator="cpu", max_epochs=-1, **trainer_kwargs)
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer


# ---- targets and time limits --------------------------------------------------------------------------------
def test_one_step_targets_truncation_vs_termination():
    """y = r + γ (1 − terminated) V(s'): a cut bootstraps, a termination does not, both at once = terminated."""
    model = SAC(env_id="Pendulum-v1", gamma=0.5)
    batch = {
        "rewards": torch.tensor([1.0, 2.0, 3.0, 4.0]),
        "terminated": torch.tensor([False, True, False, True]),
        "truncated": torch.tensor([False, False, True, True]),
    }
    y = model.td_target(batch, next_values=torch.tensor([10.0, 10.0, 8.0, 8.0]))
    torch.testing.assert_close(y, torch.tensor([1 + 0.5 * 10, 2.0, 3 + 0.5 * 8, 4.0]))


def test_replay_keeps_the_true_final_observation_and_both_flags():
    pl.seed_everything(0)
    model = SAC(env_id="tests.envs:NowOrLater", env_kwargs={"max_episode_steps": 2}, num_envs=2, learning_starts=8, **SMALL)
    data = model.make_data()
    batch = data.collect()  # 4 steps of 2 envs = 8 random warm-up transitions, no minibatches yet
    assert batch["env_steps"] == 8 and "obs" not in batch
    buf = data.buffer.data
    cut = buf["truncated"][:8]
    assert cut.tolist() == [False, False, True, True] * 2 and not buf["terminated"][:8].any()
    # a cut transition's next_obs is the episode's last observation [0, w], not the next episode's [1, 0]
    torch.testing.assert_close(buf["next_obs"][:8][cut], buf["obs"][:8][cut])
    assert (buf["next_obs"][:8][cut][:, 0] == 0).all()
    np.testing.assert_array_equal(batch["episode_lengths"], [2, 2, 2, 2])

    ended = SAC(env_id="tests.envs:NowOrLater", env_kwargs={"terminate_at": 1}, learning_starts=3, **SMALL)
    data = ended.make_data()
    data.collect()
    assert data.buffer.data["terminated"][:3].all() and not data.buffer.data["truncated"][:3].any()


@pytest.mark.parametrize("bug", [False, True], ids=["bootstrap-at-cut", "cut-as-termination"])
def test_bootstrapping_through_the_time_limit_picks_the_right_action(tmp_path, monkeypatch, bug):
    """tests.envs.NowOrLater: the greedy first action is -1 only if cut episodes bootstrap (and +1 if not)."""
    if bug:  # the bug this test guards against: treating a time-limit cut as a termination
        right = OffPolicyModule.td_target
        monkeypatch.setattr(OffPolicyModule, "td_target", lambda self, b, v: right(
            self, {**b, "terminated": b["terminated"] | b["truncated"]}, v))
    pl.seed_everything(0)
    model = SAC(env_id="tests.envs:NowOrLater", env_kwargs={"max_episode_steps": 2}, gamma=0.9, total_timesteps=2000,
                learning_starts=200, batch_size=64, network=[32, 32], learning_rate=3e-3, eval_every=-1)
    _fit(model, tmp_path)
    first_action = float(model.predict(np.array([1.0, 0.0], np.float32))[0])
    assert (first_action > 0.5) if bug else (first_action < -0.5), first_action


# ---- the squashed Gaussian ----------------------------------------------------------------------------------
def test_tanh_gaussian_log_prob_is_finite_and_exact_at_saturated_actions():
    mean, log_std = torch.tensor([[0.3, -1.0, 2.0, 0.0, -4.0]]), torch.tensor([[0.5, 1.0, -0.5, 2.0, 1.5]])
    u = torch.tensor([[0.1, -9.5, 15.0, 30.0, -60.0]])  # |u| > 9: tanh(u) is exactly ±1 in float32
    assert (torch.tanh(u).abs()[:, 1:] == 1.0).all()
    ours = TanhGaussian(mean, log_std).log_prob_pre_tanh(u)

    mpmath.mp.dps = 60  # the reference: the change of variables in 60-digit arithmetic, no identities
    ref = mpmath.mpf(0)
    for m, s, x in zip(mean[0].tolist(), log_std[0].tolist(), u[0].tolist()):
        x, sigma = mpmath.mpf(x), mpmath.e ** mpmath.mpf(s)
        gaussian = -((x - m) / sigma) ** 2 / 2 - mpmath.log(sigma) - mpmath.log(2 * mpmath.pi) / 2
        ref += gaussian - mpmath.log(1 - mpmath.tanh(x) ** 2)
    assert torch.isfinite(ours).all()
    assert abs(float(ours) - float(ref)) <= 1e-5 * abs(float(ref)), (float(ours), float(ref))
    naive = torch.log(1 - torch.tanh(u).square())  # what the stable form avoids
    assert torch.isinf(naive).any()

    torch.manual_seed(0)
    actions, log_prob = TanhGaussian(torch.full((1000, 2), 8.0), torch.zeros(1000, 2)).rsample()
    assert (actions.abs() <= 1).all() and torch.isfinite(log_prob).all()


def test_stacked_critics_match_separate_mlps():
    critics = QCritics(lp.SAC(env_id="Pendulum-v1").observation_space, 1, [16, 8], 2, "relu")
    obs, actions = torch.randn(5, 3), torch.rand(5, 1)
    for i in range(2):
        x = torch.cat([obs, actions], -1)
        for w, b in zip(critics.body.weights, critics.body.biases):
            x = torch.relu(x @ w[i] + b[i])
        torch.testing.assert_close(critics(obs, actions)[i], x @ critics.out_weight[i, 0] + critics.out_bias[i])
        torch.testing.assert_close(critics.member(obs, actions, i), x @ critics.out_weight[i, 0] + critics.out_bias[i])


def test_the_actor_loss_reads_one_critic_alone_with_the_gradient_of_the_whole_forward():
    """TD3/DDPG's actor loss computes Q1 alone (the stacked forward computed and differentiated both critics):
    the same value and the same gradient for the actor; a critic class overriding forward keeps its own."""
    model = TD3(env_id="Pendulum-v1", network=[16, 8])
    obs = torch.randn(7, 3)
    grads = []
    for loss in (lambda: -model.critic(obs, model.actor(obs))[0].mean(),
                 lambda: -model.critic.member(obs, model.actor(obs), 0).mean()):
        model.actor.zero_grad()
        value = loss()
        value.backward()
        grads.append((value.detach(), [p.grad.clone() for p in model.actor.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b)

    class Doubled(QCritics):
        def forward(self, obs, actions):
            return 2 * super().forward(obs, actions)

    model.critic.__class__ = Doubled
    torch.testing.assert_close(model.critic.member(obs, obs[:, :1], 1), model.critic(obs, obs[:, :1])[1])


# ---- the replay buffer ----------------------------------------------------------------------------------------
def _rows(start, n):
    values = torch.arange(start, start + n, dtype=torch.float32)
    return dict(obs=values[:, None], actions=-values[:, None], rewards=values, next_obs=values[:, None] + 0.5,
                terminated=values % 2 == 0, truncated=values % 3 == 0)


def test_replay_buffer_wraps_around():
    buffer = ReplayBuffer(5, (1,), torch.float32, 1)
    buffer.add(**_rows(0, 3))
    assert (buffer.pos, buffer.size) == (3, 3)
    buffer.add(**_rows(3, 4))  # rows 3, 4 fill the end; 5, 6 overwrite the two oldest
    assert (buffer.pos, buffer.size) == (2, 5)
    assert buffer.data["rewards"].tolist() == [5, 6, 2, 3, 4]
    assert buffer.data["next_obs"][:, 0].tolist() == [5.5, 6.5, 2.5, 3.5, 4.5]
    assert buffer.data["terminated"].tolist() == [False, True, True, False, True]
    torch.manual_seed(0)
    assert set(buffer.sample(200)["rewards"].tolist()) == {2, 3, 4, 5, 6}

    other = ReplayBuffer(5, (1,), torch.float32, 1)
    other.load_state_dict(buffer.state_dict())
    assert (other.pos, other.size) == (2, 5)
    assert all(torch.equal(other.data[k], buffer.data[k]) for k in buffer.data)
    smaller = ReplayBuffer(3, (1,), torch.float32, 1)  # another buffer_size keeps the newest, oldest first
    smaller.load_state_dict(buffer.state_dict())
    assert smaller.data["rewards"].tolist() == [4, 5, 6] and (smaller.pos, smaller.size) == (0, 3)


# ---- training, checkpoints and resume --------------------------------------------------------------------------
def test_td3_runs_gradient_steps_per_batch_and_delays_the_policy(tmp_path):
    pl.seed_everything(0)
    model = TD3(env_id="Pendulum-v1", total_timesteps=260, learning_starts=100, train_freq=4, gradient_steps=3, **SMALL)
    trainer = _fit(model, tmp_path)
    assert model.num_updates == 40 * 3  # (260 - 100) / 4 rounds of 3 updates
    assert trainer.global_step == 120 + 60  # optimizer steps: every critic update, every 2nd actor update


class _SnapshotAtTrainStart(pl.Callback):
    """What a resumed fit holds once everything is restored, before its first new env step (training_step pulls
    the batch itself, so at this hook nothing has been collected yet)."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if hasattr(self, "buffer"):
            return
        buffer = module.replay.buffer
        self.buffer = (buffer.pos, buffer.size, {k: v.clone() for k, v in buffer.data.items()})
        self.weights = {k: v.clone() for k, v in module.state_dict().items()}
        self.optimizers = [{k: {f: t.clone() for f, t in s.items()} for k, s in o.state.items()} for o in trainer.optimizers]
        self.noise, self.num_updates, self.num_timesteps = module.noise.state.clone(), module.num_updates, module.num_timesteps
        self.rng = torch.get_rng_state()


def test_checkpoint_restores_buffer_targets_noise_and_optimizers_exactly(tmp_path):
    kwargs = dict(env_id="Pendulum-v1", learning_starts=100, buffer_size=250, action_noise="ornstein-uhlenbeck",
                  noise_std=0.3, **SMALL)
    pl.seed_everything(0)
    model = DDPG(total_timesteps=300, **kwargs)
    trainer = _fit(model, tmp_path)
    path = tmp_path / "ddpg.ckpt"
    trainer.save_checkpoint(path)
    rng = data_state(torch.load(path, weights_only=True))["rng"]["torch"]  # loads as LightningCLI's safe loads do

    snapshot = _SnapshotAtTrainStart()
    _fit(DDPG(total_timesteps=310, **kwargs), tmp_path, ckpt_path=path, callbacks=[snapshot])
    old = model.replay.buffer
    pos, size, data = snapshot.buffer
    assert (pos, size) == (old.pos, old.size) == (50, 250)  # 300 transitions wrapped around
    assert all(torch.equal(data[k], old.data[k]) for k in old.data)
    for name, tensor in model.state_dict().items():  # weights and target networks
        assert torch.equal(snapshot.weights[name], tensor), name
    assert len(snapshot.optimizers) == len(trainer.optimizers) >= 2  # actor and critics
    for opt_old, opt_new in zip(trainer.optimizers, snapshot.optimizers):  # Adam's moments and step, every tensor
        assert len(opt_new) == len(opt_old.state) > 0
        for p_old, p_new in zip(opt_old.state.values(), opt_new.values()):
            assert p_new.keys() == p_old.keys() and {"exp_avg", "exp_avg_sq", "step"} <= p_old.keys()
            assert all(torch.equal(p_old[k], p_new[k]) for k in p_old)
    assert torch.equal(snapshot.noise, model.noise.state) and model.noise.state.abs().sum() > 0
    assert snapshot.num_updates == model.num_updates == 200 and snapshot.num_timesteps == 300
    assert torch.equal(snapshot.rng, rng)


def test_resume_through_the_cli_neither_redoes_warmup_nor_bursts(tmp_path):
    args = ["--model.network=[32,32]", "--model.batch_size=32", "--model.learning_starts=300", "--model.eval_every=-1"]
    first = run_cli(*args, "--model.total_timesteps=400", config="configs/sac_pendulum.yaml", root=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")["off_policy"]["num_updates"] == 100
    second = run_cli(*args, "--model.total_timesteps=500", "--ckpt_path=last", config="configs/sac_pendulum.yaml",
                     root=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    state = ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")
    # 100 more env steps, each with exactly one update: a second warm-up would give fewer, a catch-up more
    assert state["lightning_pg"]["num_timesteps"] == 500 and state["off_policy"]["num_updates"] == 200
    assert data_state(state)["replay_buffer"]["size"] == 500


def test_resume_without_the_buffer_refills_it_with_the_policy(tmp_path):
    args = ["--model.network=[32,32]", "--model.batch_size=32", "--model.learning_starts=300", "--model.eval_every=-1",
            "--model.save_replay_buffer=false"]
    first = run_cli(*args, "--model.total_timesteps=400", config="configs/td3_pendulum.yaml", root=tmp_path,
                    logger=csv_logger(tmp_path))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "leave the replay buffer out" in first.stdout + first.stderr
    assert "replay_buffer" not in data_state(ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt"))
    second = run_cli(*args, "--model.total_timesteps=500", "--ckpt_path=last", config="configs/td3_pendulum.yaml",
                     root=tmp_path, logger=csv_logger(tmp_path))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "refilling it with the current policy" in second.stdout + second.stderr
    # no random warm-up again: updates resume once the buffer holds a batch (32), 100 - 31 steps later
    assert ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")["off_policy"]["num_updates"] == 100 + 69
    assert any("loss/q" in row for row in csv_rows(tmp_path)[1])


def test_sac_learns_pendulum(tmp_path):
    pl.seed_everything(0)
    model = SAC(env_id="Pendulum-v1", total_timesteps=5000, learning_rate=1e-3, network=[64, 64], eval_every=-1)
    _fit(model, tmp_path)
    mean, _ = lp.evaluate(model, n_episodes=10, seed=0)
    assert mean > -400, mean


def test_bf16_mixed_forwards_after_a_gradient_step_use_the_new_weights(tmp_path):
    """Lightning runs training_step in ONE autocast region; its weight cache must not outlive an optimizer step."""
    checks = []

    class Probe(SAC):
        def train_step(self, b, optimizers):
            before = self.critic(b["obs"][:8], b["actions"][:8])  # caches the critic's bf16 weights
            out = super().train_step(b, optimizers)
            after = self.critic(b["obs"][:8], b["actions"][:8])
            with torch.autocast("cpu", torch.bfloat16, cache_enabled=False):
                fresh = self.critic(b["obs"][:8], b["actions"][:8])  # cast from the current weights
            checks.append((torch.equal(after, fresh), torch.equal(before, after)))
            return out

    pl.seed_everything(0)
    model = Probe(env_id="Pendulum-v1", total_timesteps=130, learning_starts=100, learning_rate=0.01, **SMALL)
    _fit(model, tmp_path, precision="bf16-mixed")
    assert len(checks) == 30 and all(fresh and not unchanged for fresh, unchanged in checks), checks
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in model.parameters())


def test_predict_rescales_into_the_bounds_and_keeps_the_rank():
    model = TD3(env_id="Pendulum-v1")  # actions in [-2, 2]
    single, batch = model.predict(np.zeros(3, np.float32)), model.predict(np.zeros((4, 3), np.float32))
    assert single.shape == (1,) and batch.shape == (4, 1)
    np.testing.assert_allclose(model.env_actions(torch.tensor([[-1.0], [0.0], [1.0]])), [[-2.0], [0.0], [2.0]])
    # off-center bounds [0, 4] x [-3, 1] and interior actions, where the final clip cannot hide a wrong rescale:
    # a in [-1, 1] goes to low + (a + 1) / 2 (high - low)
    model = TD3(env_id="tests.envs:OffCenterBounds")
    np.testing.assert_allclose(model.env_actions(torch.tensor([[-1.0, -1.0], [0.0, 0.0], [0.5, -0.5], [1.0, 1.0]])),
                               [[0.0, -3.0], [2.0, -1.0], [3.0, -2.0], [4.0, 1.0]])
    obs = np.random.default_rng(0).uniform(-1, 1, (16, 3)).astype(np.float32)
    with torch.no_grad():
        raw = model.act(torch.as_tensor(obs), deterministic=True).numpy()  # the actor's own output
    assert 0 < np.abs(raw).max() < 1
    low, high = np.array([0.0, -3.0]), np.array([4.0, 1.0])
    np.testing.assert_allclose(model.predict(obs), low + (raw + 1) / 2 * (high - low), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [DDPG, SAC])
def test_exported_policy_matches_eager_predict(cls):
    model = cls(env_id="MountainCarContinuous-v0", network=[16, 16]).eval()  # bounds [-1, 1]: scale 1
    model.actor.requires_grad_(False)
    for p in model.actor.parameters():  # large weights: the actions saturate, so the bounds must hold
        p.add_(torch.randn_like(p) * 3)
    obs = torch.randn(8, 2)
    exported = torch.export.export(model, (obs,)).module()
    actions = exported(obs).numpy()
    np.testing.assert_allclose(actions, model.predict(obs.numpy()), rtol=1e-6)
    assert np.abs(actions).max() <= 1.0 and np.abs(actions).max() > 0.9


def test_linear_learning_rate_schedule_reaches_every_optimizer(tmp_path):
    class Rates(pl.Callback):
        seen = []

        def on_train_batch_end(self, trainer, module, *args):
            rates = {group["lr"] for optimizer in trainer.optimizers for group in optimizer.param_groups}
            self.seen.append((module.num_timesteps, rates))

    model = SAC(env_id="Pendulum-v1", total_timesteps=400, learning_starts=100, learning_rate="lin_1e-3", **SMALL)
    model.env_steps_per_training_step = 1  # one batch (one env step, one update) per training_step: see each rate
    _fit(model, tmp_path, callbacks=[Rates()])
    updating = [(t, rates) for t, rates in Rates.seen if t > 100]
    assert len(updating) == 300
    for t, rates in updating:  # actor (and α) and critics: one rate, 1e-3 (1 - t / 400), as SB3's lin_ schedule
        assert len(rates) == 1 and rates.pop() == pytest.approx(1e-3 * (1 - t / 400))


def test_a_subclass_with_one_optimizer_gets_a_list_of_one_and_its_schedule(tmp_path):
    """Lightning's ``optimizers()`` returns a lone optimizer bare: ``train_step`` still gets the documented list,
    and a learning-rate schedule reaches it (it used to iterate the bare optimizer and fail)."""
    class OneOptimizerDDPG(DDPG):
        seen = []

        def configure_optimizers(self):
            return torch.optim.Adam([*self.actor.parameters(), *self.critic.parameters()], lr=1e-3)

        def train_step(self, b, optimizers):
            (optimizer,) = optimizers
            self.seen.append(optimizer.param_groups[0]["lr"])
            return super().train_step(b, [optimizer, optimizer])

    model = OneOptimizerDDPG(env_id="Pendulum-v1", total_timesteps=300, learning_starts=100,
                             learning_rate="lin_1e-3", **SMALL)
    _fit(model, tmp_path)
    assert len(OneOptimizerDDPG.seen) == 200
    assert OneOptimizerDDPG.seen[0] == pytest.approx(1e-3 * (1 - 101 / 300), rel=0.02)
    assert OneOptimizerDDPG.seen[-1] == pytest.approx(1e-3 * (1 - 300 / 300), abs=1e-5)


@pytest.mark.parametrize("cls", [DDPG, TD3, SAC])
def test_discrete_actions_raise_one_paragraph_env_error(cls):
    with pytest.raises(lp.EnvError) as info:
        cls(env_id="CartPole-v1")
    message = str(info.value)
    assert f"{cls.__name__} cannot act in 'CartPole-v1'" in message and "Fix:" in message and "\n" not in message


@pytest.mark.parametrize("bad", [{"tau": 0.0}, {"buffer_size": 0}, {"gradient_steps": 0}, {"ent_coef": "autox"},
                                 {"ent_coef": -0.1}, {"learning_starts": -1}])
def test_invalid_hyperparameters_raise_config_error(bad):
    with pytest.raises(lp.ConfigError, match="Invalid hyperparameter"):
        SAC(env_id="Pendulum-v1", **bad)


def test_ou_noise_is_correlated_and_resets_at_episode_end():
    from lightning_pg.noise import OrnsteinUhlenbeckActionNoise

    torch.manual_seed(0)
    noise = OrnsteinUhlenbeckActionNoise(num_envs=2, act_dim=1, sigma=0.3)
    xs = torch.stack([noise.sample() for _ in range(2000)])[:, 0, 0]
    assert torch.corrcoef(torch.stack([xs[:-1], xs[1:]]))[0, 1] > 0.9
    noise.reset(np.array([1]))
    assert noise.state[1].item() == 0 and noise.state[0].item() != 0
    assert math.isclose(noise.theta, 0.15) and math.isclose(noise.dt, 0.01)
