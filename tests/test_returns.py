"""Known-answer tests for returns.py: hand-computed values, truncation and termination in one batch."""
import numpy as np
import pytest
import torch

from lightning_pg.returns import discounted_returns, gae

GAMMA = 0.5
# Two envs (columns), four steps (rows).
# env a: t1 terminates; t3 is the last row of the rollout (bootstraps from next_values[3] = 10).
# env b: t0 is cut by a time limit (bootstraps from V(final obs) = 8); t2 is terminated AND truncated,
#        which counts as terminated; t3 is the last row (bootstraps from 4).
REWARDS = torch.tensor([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0], [4.0, 1.0]])
NEXT_VALUES = torch.tensor([[5.0, 8.0], [7.0, 2.0], [6.0, 9.0], [10.0, 4.0]])
TERMINATED = torch.tensor([[False, False], [True, False], [False, True], [False, False]])
TRUNCATED = torch.tensor([[False, True], [False, False], [False, True], [False, False]])
DONES = TERMINATED | TRUNCATED
VALUES = torch.tensor([[4.0, 3.0], [5.0, 2.0], [2.0, 1.0], [6.0, 2.0]])  # V(s_t); V(s_{t+1}) = next_values[t] within an episode


def test_discounted_returns_known_answer():
    # a: G3 = 4 + .5*10 = 9; G2 = 3 + .5*9 = 7.5; G1 = 2 (terminated); G0 = 1 + .5*2 = 2
    # b: G3 = 1 + .5*4 = 3; G2 = 1 (terminated, no bootstrap); G1 = 1 + .5*1 = 1.5; G0 = 1 + .5*8 = 5 (cut)
    expected = torch.tensor([[2.0, 5.0], [2.0, 1.5], [7.5, 1.0], [9.0, 3.0]])
    got = discounted_returns(REWARDS, NEXT_VALUES, TERMINATED, DONES, GAMMA)
    torch.testing.assert_close(got, expected)


def test_discounted_returns_without_bootstrap_is_plain_reward_to_go():
    rewards = torch.tensor([1.0, 1.0, 1.0])
    done = torch.tensor([False, False, True])
    got = discounted_returns(rewards, torch.zeros(3), done, done, 0.9)
    torch.testing.assert_close(got, torch.tensor([1 + 0.9 + 0.81, 1.9, 1.0]))


def test_gae_known_answer():
    # a: d0 = 1 + .5*5 - 4 = -.5, d1 = 2 - 5 = -3, d2 = 3 + .5*6 - 2 = 4, d3 = 4 + .5*10 - 6 = 3
    #    A3 = 3, A2 = 4 + .25*3 = 4.75, A1 = -3, A0 = -.5 + .25*(-3) = -1.25
    # b: d0 = 1 + .5*8 - 3 = 2 (cut), d1 = 1 + .5*2 - 2 = 0, d2 = 1 - 1 = 0 (terminated), d3 = 1 + .5*4 - 2 = 1
    #    A3 = 1, A2 = 0, A1 = 0 + .25*0 = 0, A0 = 2
    lam = 0.5
    adv, ret = gae(REWARDS, VALUES, NEXT_VALUES, TERMINATED, DONES, GAMMA, lam)
    torch.testing.assert_close(adv, torch.tensor([[-1.25, 2.0], [-3.0, 0.0], [4.75, 0.0], [3.0, 1.0]]))
    torch.testing.assert_close(ret, adv + VALUES)


def test_numpy_arrays_give_the_same_answers_in_numpy():
    """CPU rollouts compute GAE on numpy arrays (float32 values, bool masks): same numbers, numpy out."""
    arrays = [x.numpy() for x in (REWARDS, VALUES, NEXT_VALUES, TERMINATED, DONES)]
    adv, ret = gae(*arrays, GAMMA, 0.5)
    assert isinstance(adv, np.ndarray) and adv.dtype == np.float32 and ret.dtype == np.float32
    expected_adv, expected_ret = gae(REWARDS, VALUES, NEXT_VALUES, TERMINATED, DONES, GAMMA, 0.5)
    np.testing.assert_allclose(adv, expected_adv.numpy())
    np.testing.assert_allclose(ret, expected_ret.numpy())
    rewards, _, next_values, terminated, dones = arrays
    mc = discounted_returns(rewards, next_values, terminated, dones, GAMMA)
    np.testing.assert_allclose(mc, discounted_returns(REWARDS, NEXT_VALUES, TERMINATED, DONES, GAMMA).numpy())
    assert arrays[0] is not adv and np.array_equal(arrays[0], REWARDS.numpy())  # inputs left as they were


def _random_rollout(steps=50, envs=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(steps, envs, generator=g)
    values = torch.randn(steps + 1, envs, generator=g)
    terminated = torch.rand(steps, envs, generator=g) < 0.08
    truncated = torch.rand(steps, envs, generator=g) < 0.08
    dones = terminated | truncated
    final_values = torch.randn(steps, envs, generator=g)
    # V(s'_t): the next row's value inside an episode, the final observation's value at an episode end
    next_values = torch.where(dones, final_values, values[1:])
    return rewards, values[:-1], next_values, terminated, dones


def _naive_gae(rewards, values, next_values, terminated, dones, gamma, lam):
    steps, envs = rewards.shape
    adv = torch.zeros(steps, envs)
    for e in range(envs):
        for t in range(steps):
            total, scale = 0.0, 1.0
            for k in range(t, steps):
                delta = rewards[k, e] + gamma * (0.0 if terminated[k, e] else next_values[k, e]) - values[k, e]
                total += scale * delta
                if dones[k, e]:
                    break
                scale *= gamma * lam
            adv[t, e] = total
    return adv


@pytest.mark.parametrize("lam", [0.0, 0.8, 1.0])
def test_gae_matches_naive_sum(lam):
    rollout = _random_rollout()
    adv, _ = gae(*rollout, gamma=0.97, gae_lambda=lam)
    torch.testing.assert_close(adv, _naive_gae(*rollout, 0.97, lam), rtol=1e-4, atol=1e-4)


def test_lambda_one_returns_equal_monte_carlo_returns():
    rewards, values, next_values, terminated, dones = _random_rollout(seed=1)
    _, lambda_returns = gae(rewards, values, next_values, terminated, dones, 0.95, 1.0)
    mc = discounted_returns(rewards, next_values, terminated, dones, 0.95)
    torch.testing.assert_close(lambda_returns, mc, rtol=1e-4, atol=1e-4)
