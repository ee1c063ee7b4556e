"""Acting through numpy (training rollouts, ``predict``), for the standard MLP :class:`ActorCritic` on the CPU.

A rollout step acts on a handful of observations (8 CartPoles): a dozen tiny ops, where torch's per-op
dispatch is most of the cost and numpy's is a fraction of it (``benchmarks/vs_sb3.py --without numpy_actor``
shows what it buys). Used only where :meth:`NumpyActor.mirrors` finds the policy to be exactly the standard
one (exact types, no observation normalization, float32 on the CPU outside autocast), so a policy that
changes anything is acted with by its own module. The arrays are views of the parameters (the optimizer's
in-place updates show through; built per rollout, so replaced parameters are picked up), and the noise is drawn from torch's RNG exactly as
:class:`Categorical` and :class:`DiagGaussian` draw it, so seeding and exact resume work as on the torch
path. Actions, log-probs and values agree with the module's to float rounding (tests).
"""
from __future__ import annotations

import numpy as np
import torch

from lightning_pg.networks.actor_critic import (LOG_SQRT_2PI, ActorCritic, CategoricalHead, GaussianHead, Linear,
                                                StackedMLP)

_ACTIVATIONS = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0)}


class NumpyActor:
    enabled = True  # benchmarks switch it off to measure what it buys

    @classmethod
    def mirrors(cls, policy: ActorCritic) -> bool:
        """Whether this class computes exactly what ``policy`` computes (else act through the module)."""
        head, body = policy.pi_head, policy.body
        return (
            cls.enabled and type(policy) is ActorCritic and type(body) is StackedMLP
            and body.activation_name in _ACTIVATIONS and policy.obs_rms is None
            and (type(head) is CategoricalHead or (type(head) is GaussianHead and type(head.mean) is Linear))
            and (policy.v_head is None or type(policy.v_head) is Linear)
            # forward hooks (a user's feature recorder) run only when the modules do
            and not any(m._forward_hooks or m._forward_pre_hooks for m in policy.modules())
            # the module's parameters move and cast together (Lightning's precision and device): one stands for all
            and _weight(head).device.type == "cpu" and _weight(head).dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")  # (bf16-mixed acts in bf16, inside the training step's autocast)
        )

    def __init__(self, policy: ActorCritic):
        view = lambda t: t.detach().numpy()  # noqa: E731 - shares memory with the parameter
        self.activation = _ACTIVATIONS[policy.body.activation_name]
        self.layers = [(view(w), view(b)) for w, b in zip(policy.body.weights, policy.body.biases)]
        head = policy.pi_head
        out = head.mean if isinstance(head, GaussianHead) else head
        self.pi_out = (view(out.weight), view(out.bias))
        self.log_std = view(head.log_std) if isinstance(head, GaussianHead) else None
        self.v_out = None if policy.v_head is None else (view(policy.v_head.weight), view(policy.v_head.bias))
        self.members = policy.body.members

    def _features(self, obs: np.ndarray) -> np.ndarray:
        h = obs.reshape(len(obs), -1).astype(np.float32, copy=False)
        if not self.layers:
            return np.broadcast_to(h, (self.members, *h.shape))
        for weight, bias in self.layers:  # [B, in] or [n, B, in] @ [n, in, out] -> [n, B, out]
            h = self.activation(np.matmul(h, weight) + bias)
        return h

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """``(x, actions, log_probs, values)`` for raw observations ``[B, ...]``, as the rollout stores them."""
        features = self._features(obs)
        values = None if self.v_out is None else features[1] @ self.v_out[0] + self.v_out[1]
        actions, log_probs = self._sample(features[0] @ self.pi_out[0] + self.pi_out[1])
        return obs, actions, log_probs, values

    def predict(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        """Actions for raw observations ``[B, ...]``: the distribution's mode, or a sample (as ``act()``)."""
        out = self._features(obs)[0] @ self.pi_out[0] + self.pi_out[1]
        if not deterministic:
            return self._sample(out)[0]
        return out if self.log_std is not None else out.argmax(-1)

    def _sample(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Actions and log-probs from the policy head's output (logits, or the Gaussian mean)."""
        if self.log_std is None:  # categorical, Gumbel-max as Categorical.sample
            shifted = out - out.max(-1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
            actions = (log_probs - np.log(torch.empty(log_probs.shape).exponential_().numpy())).argmax(-1)
            return actions, log_probs[np.arange(len(actions)), actions]
        noise = torch.randn(out.shape).numpy()  # diagonal Gaussian: a = mean + std · ε, z = ε
        log_prob = (-0.5 * noise * noise - self.log_std - LOG_SQRT_2PI).sum(-1)
        return out + np.exp(self.log_std) * noise, log_prob.astype(np.float32)

    def value(self, obs: np.ndarray) -> np.ndarray:
        """V(s) ``[B]`` for raw observations ``[B, ...]``."""
        return self._features(obs)[1] @ self.v_out[0] + self.v_out[1]


def _weight(head: CategoricalHead | GaussianHead) -> torch.Tensor:
    return (head.mean if isinstance(head, GaussianHead) else head).weight
