"""Stochastic policy π(a|s) and state value V(s) for REINFORCE, A2C and PPO.

Two separate networks over the same observation (Stable-Baselines3's default for MLP policies): sharing a
body couples the value loss scale to the policy's features.

Shapes: ``obs [B, *obs_shape]``; ``x = normalize(obs)`` (the identity unless observation normalization is
on); ``dist(x)`` is a :class:`Categorical` (actions ``[B]`` long) or a :class:`DiagGaussian` with a
state-independent log-std (actions ``[B, act_dim]``); ``value(x) [B]``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from lightning_pg.networks.distributions import _LOG_SQRT_2PI, Categorical, DiagGaussian
from lightning_pg.networks.encoders import BY_HAND_ACTIVATIONS, MLP, linear_backward, make_encoder
from lightning_pg.networks.normalize import RunningMeanStd


class CategoricalHead(nn.Linear):
    def forward(self, features: Tensor) -> Categorical:
        return Categorical(super().forward(features))


class GaussianHead(nn.Module):
    def __init__(self, in_features: int, act_dim: int, log_std_init: float = 0.0):
        super().__init__()
        self.mean = nn.Linear(in_features, act_dim)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def forward(self, features: Tensor) -> DiagGaussian:
        return DiagGaussian(self.mean(features), self.log_std)


def policy_head(action_space: spaces.Space, in_features: int, log_std_init: float = 0.0) -> nn.Module:
    if isinstance(action_space, spaces.Discrete):
        return CategoricalHead(in_features, int(action_space.n))
    return GaussianHead(in_features, int(np.prod(action_space.shape)), log_std_init)


class ActorCritic(nn.Module):
    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Space,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        with_value: bool = True,
        ortho_init: bool = False,
        log_std_init: float = 0.0,
        normalize_obs: bool = False,
    ):
        super().__init__()
        self.obs_rms = RunningMeanStd(observation_space.shape) if normalize_obs else None
        self.pi_body = make_encoder(observation_space, hidden_sizes, activation)
        self.pi_head = policy_head(action_space, self.pi_body.out_features, log_std_init)
        self.v_body = self.v_head = None
        if with_value:
            self.v_body = make_encoder(observation_space, hidden_sizes, activation)
            self.v_head = nn.Linear(self.v_body.out_features, 1)
        if ortho_init:
            self._orthogonal_init()

    def normalize(self, obs: Tensor) -> Tensor:
        """Observations as the networks see them (running-normalized when that is on)."""
        return obs if self.obs_rms is None else self.obs_rms.normalize(obs)

    def dist(self, x: Tensor) -> Categorical | DiagGaussian:
        return self.pi_head(self.pi_body(x))

    def value(self, x: Tensor) -> Tensor:
        return self.v_head(self.v_body(x)).squeeze(-1)

    # ---- the update's forward and backward written out ------------------------------------------------------
    # A PPO CartPole update is ~7,800 forward+backward passes of two 64x64 MLPs over 256 samples. There, autograd's
    # bookkeeping (recording ~34 graph nodes, then running each at ~6 us) costs more than the arithmetic: 430 us
    # per pass against 270 us with the same tensor ops written out. So for the common case (MLP bodies with tanh
    # or relu, 32-bit) the on-policy update runs this pair; everything else uses autograd, and tests check that
    # both give the same gradients.
    @property
    def has_backward_by_hand(self) -> bool:
        bodies = [self.pi_body] if self.v_body is None else [self.pi_body, self.v_body]
        return all(isinstance(body, MLP) and body.has_backward_by_hand for body in bodies)

    @torch.no_grad()
    def forward_saving(self, x: Tensor) -> tuple[Categorical | DiagGaussian, Tensor | None, tuple]:
        """``dist(x)`` and ``value(x)`` (None without a value) plus what :meth:`backward_by_hand` needs."""
        pi_saved = self.pi_body.forward_saving(x)
        dist = self.pi_head(pi_saved[-1])
        if self.v_body is None:
            return dist, None, (pi_saved, None)
        v_saved = self.v_body.forward_saving(x)
        return dist, self.v_head(v_saved[-1]).squeeze(-1), (pi_saved, v_saved)

    @torch.no_grad()
    def backward_by_hand(
        self, dist: Categorical | DiagGaussian, saved: tuple, actions: Tensor, d_log_prob: Tensor,
        d_value: Tensor | None, d_entropy: float | None = None,
    ) -> None:
        """Write dL/dθ into every parameter's ``.grad`` for a loss given by its derivatives per sample:
        dL/dlog π(a|s) ``[B]``, dL/dV(s) ``[B]`` and dL/dH (one number: entropy bonuses weigh every sample alike)."""
        pi_saved, v_saved = saved
        if isinstance(self.pi_head, GaussianHead):
            grad_mean, grad_log_std = dist.backward(actions, d_log_prob, d_entropy)
            torch.sum(grad_log_std, 0, out=self.pi_head.log_std.grad)  # one log-std shared by every state
            grad_features = linear_backward(self.pi_head.mean, pi_saved[-1], grad_mean)
        else:
            grad_features = linear_backward(self.pi_head, pi_saved[-1], dist.backward(actions, d_log_prob, d_entropy))
        self.pi_body.backward_by_hand(pi_saved, grad_features)
        if v_saved is not None:
            self.v_body.backward_by_hand(v_saved, linear_backward(self.v_head, v_saved[-1], d_value.unsqueeze(-1)))

    def numpy_actor(self) -> "NumpyActor":
        """This policy's sampling and value as numpy ops on the weights' own memory, for rollouts on the CPU
        (MLP bodies with tanh or relu, see :class:`NumpyActor`). Build it per rollout (13 us): it holds views
        of the parameters as they are now, which a later ``load_state_dict(assign=True)``, ``contiguous`` or
        swapped layer would leave behind."""
        return NumpyActor(self)

    def _orthogonal_init(self) -> None:
        """PPO's init (Andrychowicz et al. 2021): hidden gain √2, policy output 0.01, value output 1."""
        for body in (self.pi_body, self.v_body):
            for layer in body.modules() if body is not None else ():
                if isinstance(layer, (nn.Linear, nn.Conv2d)):
                    nn.init.orthogonal_(layer.weight, math.sqrt(2))
                    nn.init.zeros_(layer.bias)
        out = self.pi_head.mean if isinstance(self.pi_head, GaussianHead) else self.pi_head
        nn.init.orthogonal_(out.weight, 0.01)
        nn.init.zeros_(out.bias)
        if self.v_head is not None:
            nn.init.orthogonal_(self.v_head.weight, 1.0)
            nn.init.zeros_(self.v_head.bias)


class NumpyActor:
    """π(a|s) sampling and V(s) of an MLP :class:`ActorCritic` in numpy, for the rollout's acting on the CPU.

    A rollout step acts on a handful of observations (8 CartPoles): a dozen tiny ops, where torch's per-op
    dispatch (~4 us each here) was most of the cost: 187 against 143 us per step, policy plus env, with numpy.
    The arrays are views of the parameters (the optimizer's in-place updates show through), and the noise is
    drawn from torch's RNG exactly as :meth:`Categorical.sample` and :meth:`DiagGaussian.sample` draw it, so
    seeding and bit-identical resume work as on the torch path. Log-probs and values agree with torch's to
    float rounding.
    """

    def __init__(self, policy: ActorCritic):
        view = lambda t: t.detach().numpy()  # noqa: E731 - shares memory with the parameter
        linear = lambda layer: (view(layer.weight).T, view(layer.bias))  # noqa: E731
        self.activation, _ = BY_HAND_ACTIVATIONS[policy.pi_body.activation_name]
        gaussian = isinstance(policy.pi_head, GaussianHead)
        self.pi = [linear(layer) for layer in policy.pi_body.layers]
        self.pi_out = linear(policy.pi_head.mean if gaussian else policy.pi_head)
        self.log_std = view(policy.pi_head.log_std) if gaussian else None
        self.v = None if policy.v_body is None else [linear(layer) for layer in policy.v_body.layers]
        self.v_out = None if policy.v_head is None else linear(policy.v_head)

    def _mlp(self, layers: list, out: tuple, obs: np.ndarray) -> np.ndarray:
        h = obs.reshape(len(obs), -1).astype(np.float32, copy=False)
        for weight, bias in layers:
            h = self.activation(h @ weight + bias)
        return h @ out[0] + out[1]

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sampled actions ``[B]`` (discrete) or ``[B, d]`` and their log-probs ``[B]`` for observations ``[B, ...]``."""
        out = self._mlp(self.pi, self.pi_out, obs)
        if self.log_std is None:  # categorical, Gumbel-max as Categorical.sample
            shifted = out - out.max(-1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
            actions = (log_probs - np.log(torch.empty(log_probs.shape).exponential_().numpy())).argmax(-1)
            return actions, log_probs[np.arange(len(actions)), actions]
        noise = torch.randn(out.shape).numpy()  # diagonal Gaussian: a = mean + std · ε, z = ε
        log_prob = (-0.5 * noise * noise - self.log_std - _LOG_SQRT_2PI).sum(-1)
        return out + np.exp(self.log_std) * noise, log_prob.astype(np.float32)

    def values(self, obs: np.ndarray) -> np.ndarray:
        """V(s) ``[B]`` for observations ``[B, ...]``."""
        return self._mlp(self.v, self.v_out, obs)[:, 0]
