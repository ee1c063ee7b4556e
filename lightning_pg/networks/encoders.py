"""Observation encoders: MLP for vector observations, Nature-DQN CNN for images.

``make_encoder(observation_space, hidden_sizes, activation)`` returns ``(module, out_features)``; the module
maps observations ``[B, *obs_shape]`` to features ``[B, out_features]``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU}


def mlp(in_features: int, hidden_sizes: Sequence[int], activation: str = "tanh") -> nn.Sequential:
    """Linear + activation per hidden size; ``[]`` gives the identity (a linear policy on raw inputs)."""
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [nn.Linear(in_features, size), ACTIVATIONS[activation]()]
        in_features = size
    return nn.Sequential(*layers)


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


class Flatten(nn.Module):
    """Vector observations of any rank to ``[B, prod(shape)]`` float."""

    def forward(self, obs: Tensor) -> Tensor:
        return obs.flatten(1).float()


def make_encoder(
    observation_space: spaces.Box, hidden_sizes: Sequence[int], activation: str = "tanh"
) -> tuple[nn.Module, int]:
    if is_image_space(observation_space):
        cnn = NatureCNN(observation_space)
        return nn.Sequential(cnn, mlp(cnn.out_features, hidden_sizes, activation)), (
            hidden_sizes[-1] if hidden_sizes else cnn.out_features
        )
    in_features = int(np.prod(observation_space.shape))
    return nn.Sequential(Flatten(), mlp(in_features, hidden_sizes, activation)), (
        hidden_sizes[-1] if hidden_sizes else in_features
    )
