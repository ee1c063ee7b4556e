"""Observation encoders: MLP for vector observations, Nature-DQN CNN for images.

``make_encoder(observation_space, hidden_sizes, activation)`` returns ``(module, out_features)``; the module
maps observations ``[B, *obs_shape]`` to features ``[B, out_features]``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor, nn

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "elu": F.elu, "gelu": F.gelu, "silu": F.silu}
#: activations with hand-written paths: name -> (the activation in numpy, for NumpyActor; its backward from
#: the OUTPUT y, dL/dx given dL/dy, for MLP.backward_by_hand). The backwards are autograd's own fused kernels:
#: g·(1 − y²) as three ops took 9.5 us here, tanh_backward 3.6 us.
BY_HAND_ACTIVATIONS = {
    "tanh": (np.tanh, torch.ops.aten.tanh_backward),
    "relu": (lambda x: np.maximum(x, 0.0), lambda grad, y: torch.ops.aten.threshold_backward(grad, y, 0)),
}


def linear_backward(layer: nn.Linear, inputs: Tensor, grad_out: Tensor, input_grad: bool = True) -> Tensor | None:
    """Backward of ``y = x Wᵀ + b`` by hand: writes dL/dW = gᵀx and dL/db = Σ g into the layer's ``.grad``
    (which must exist) and returns dL/dx = g W (None when ``input_grad`` is False)."""
    torch.mm(grad_out.t(), inputs, out=layer.weight.grad)
    torch.sum(grad_out, 0, out=layer.bias.grad)
    return grad_out.mm(layer.weight) if input_grad else None


class MLP(nn.Module):
    """Linear + activation per hidden size (``[]``: the identity). Input ``[B, *shape]``, output ``[B, sizes[-1]]``.

    The forward loops over the layers itself instead of chaining modules: one rollout step calls it on a
    handful of observations, where nn.Sequential's per-module call overhead doubled the time (23 vs 12 us).
    """

    def __init__(self, in_features: int, hidden_sizes: Sequence[int], activation: str = "tanh"):
        super().__init__()
        sizes = [in_features, *hidden_sizes]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        self.activation = ACTIVATIONS[activation]
        self.activation_name = activation
        self.out_features = sizes[-1]

    def forward(self, x: Tensor) -> Tensor:
        x = _flat_float(x)
        for layer in self.layers:
            x = self.activation(F.linear(x, layer.weight, layer.bias))
        return x

    # ---- the same pass with its backward written out (on-policy fast path, see ActorCritic.backward_by_hand)
    @property
    def has_backward_by_hand(self) -> bool:
        return self.activation_name in BY_HAND_ACTIVATIONS

    # (both run inside ActorCritic's forward_saving / backward_by_hand, under their no_grad)
    def forward_saving(self, x: Tensor) -> list[Tensor]:
        """``forward`` keeping every layer's input and the output: ``[x, h_1, ..., h_k]`` (``h_k`` is the output)."""
        saved = [_flat_float(x)]
        for layer in self.layers:
            saved.append(self.activation(F.linear(saved[-1], layer.weight, layer.bias)))
        return saved

    def backward_by_hand(self, saved: list[Tensor], grad_out: Tensor) -> None:
        """Given dL/d(output) for the activations ``saved`` by :meth:`forward_saving`, write dL/dW and dL/db of
        every layer into its ``.grad`` (the input's gradient is not needed: observations are data)."""
        _, activation_backward = BY_HAND_ACTIVATIONS[self.activation_name]
        grad = grad_out
        for i in reversed(range(len(self.layers))):
            grad = activation_backward(grad, saved[i + 1])  # dL/d(pre-activation)
            grad = linear_backward(self.layers[i], saved[i], grad, input_grad=i > 0)


def _flat_float(x: Tensor) -> Tensor:
    if x.dim() != 2:
        x = x.flatten(1)
    return x if x.dtype == torch.float32 else x.float()


def is_image_space(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


class NatureCNN(nn.Module):
    """Mnih et al. 2015 encoder. Input ``[B, H, W, C]`` uint8 (gymnasium's layout), output ``[B, 512]``."""

    def __init__(self, observation_space: spaces.Box, features: int = 512):
        super().__init__()
        height, width, channels = observation_space.shape
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, channels, height, width)).shape[1]
        self.fc = nn.Sequential(nn.Linear(flat, features), nn.ReLU())
        self.out_features = features

    def forward(self, obs: Tensor) -> Tensor:
        return self.fc(self.conv(obs.permute(0, 3, 1, 2).float() / 255.0))


def make_encoder(observation_space: spaces.Box, hidden_sizes: Sequence[int], activation: str = "tanh") -> nn.Module:
    """An encoder with an ``out_features`` attribute: CNN (+ MLP) for uint8 images, MLP otherwise."""
    if is_image_space(observation_space):
        cnn = NatureCNN(observation_space)
        head = MLP(cnn.out_features, hidden_sizes, activation)
        encoder = nn.Sequential(cnn, head)
        encoder.out_features = head.out_features
        return encoder
    return MLP(int(np.prod(observation_space.shape)), hidden_sizes, activation)
