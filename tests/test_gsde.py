"""gSDE: the state-dependent Gaussian's variance, noise held for sde_sample_freq steps, its σ options, and
training through PPO, A2C and TRPO."""
import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

import lightning_pg as lp
from lightning_pg.data.rollouts import TorchActor
from lightning_pg.networks.actor_critic import StateDependentGaussianHead


def test_the_noise_z_E_has_the_variance_the_log_probs_use():
    """ε = z E with E ~ N(0, σ²): Var(ε_j) = Σ_i z_i² σ_ij², the Gaussian log_prob and entropy read."""
    torch.manual_seed(0)
    head = StateDependentGaussianHead(3, 2, log_std_init=-0.5)
    with torch.no_grad():
        head.log_std.copy_(torch.tensor([[-0.5, 0.2], [0.1, -1.0], [0.3, 0.0]]))
    z = torch.tensor([[0.5, -1.0, 2.0]])
    variance = z.square() @ head.std().square()  # [1, 2]
    n = 40_000
    head.reset_noise(n)
    dist = head(z.expand(n, 3))
    noise = dist.sample() - dist.mean
    torch.testing.assert_close(noise.var(0), variance[0], rtol=0.03, atol=0)
    torch.testing.assert_close(dist.log_std[0], 0.5 * torch.log(variance[0] + 1e-6))
    actions = dist.mean[:1] + torch.tensor([[0.3, -0.7]])
    expected = torch.distributions.Normal(dist.mean[0], (variance[0] + 1e-6).sqrt()).log_prob(actions[0]).sum()
    torch.testing.assert_close(dist.log_prob(actions)[0], expected)


def test_sigma_per_feature_and_expln():
    head = StateDependentGaussianHead(4, 3, log_std_init=-1.0, full_std=False)
    assert head.log_std.shape == (4, 1) and head.std().shape == (4, 3)
    torch.testing.assert_close(head.std(), torch.full((4, 3), math.exp(-1.0)))
    expln = StateDependentGaussianHead(2, 1, log_std_init=0.0, use_expln=True)
    with torch.no_grad():
        expln.log_std.copy_(torch.tensor([[-1.0], [1.0]]))
    torch.testing.assert_close(expln.std()[:, 0], torch.tensor([math.exp(-1.0), math.log(2.0) + 1.0]))


@pytest.mark.parametrize("every, same", [(4, [True, True, True, False, True, True, True]), (-1, [True] * 7)])
def test_exploration_matrices_are_held_for_sde_sample_freq_steps(every, same):
    """Fed the same observations, a rollout's noise repeats while E is held: per rollout (-1) or every k steps."""
    torch.manual_seed(0)
    model = lp.PPO(env_id="Pendulum-v1", num_envs=2, n_steps=8, batch_size=16, use_sde=True, sde_sample_freq=every)
    actor = model.rollout_actor()
    assert isinstance(actor, TorchActor)
    obs = np.array([[0.5, 0.5, 0.1], [-0.2, 0.9, 1.0]], np.float32)
    actions = [actor.act(obs)[1] for _ in range(8)]
    assert [torch.equal(a, b) for a, b in zip(actions, actions[1:])] == same
    assert not torch.equal(actions[0][0], actions[0][1])  # each env has its own matrix
    assert not torch.equal(model.rollout_actor().act(obs)[1], actions[0])  # the next rollout draws new ones


def test_gsde_is_for_box_actions_only():
    with pytest.raises(lp.ConfigError, match="use_sde .* explores continuous actions"):
        lp.PPO(env_id="CartPole-v1", use_sde=True)


@pytest.mark.parametrize("cls", [lp.PPO, lp.A2C, lp.TRPO])
def test_gsde_trains_and_its_log_std_matrix_learns(cls, tmp_path):
    pl.seed_everything(0)
    extra = dict(n_steps=64, batch_size=64) if cls is not lp.A2C else dict(n_steps=8)
    model = cls(env_id="Pendulum-v1", num_envs=2, use_sde=True, sde_sample_freq=4, total_timesteps=512,
                eval_every=-1, **extra)
    before = model.policy.pi_head.log_std.detach().clone()
    pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
               default_root_dir=tmp_path, max_epochs=-1).fit(model)
    assert not torch.equal(model.policy.pi_head.log_std, before)
    restored = cls.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    obs = np.zeros((3, 3), np.float32)
    np.testing.assert_array_equal(restored.predict(obs), model.predict(obs))
    assert np.isfinite(lp.evaluate(model, 2)[0])
