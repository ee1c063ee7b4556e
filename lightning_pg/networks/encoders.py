"""Observation encoders: MLP for vector observations, Nature-DQN CNN for images.

- :class:`MLP`: linear + activation per hidden size, ``[B, *shape] -> [B, sizes[-1]]``.
- :class:`NatureCNN` and :func:`make_encoder`: images get the Nature-DQN CNN (then an MLP).
- :class:`MultiInputEncoder`: Dict and Tuple observations holding images, one CNN per image part.

Every builder takes the env's own observation space; the networks read observations in their flat form (see
:class:`~lightning_pg.envs.FlatObservation`): a Box as it is, anything else as one float32 vector.

The stacked MLP of the actor-critic and the twin critics is :class:`~lightning_pg.networks.actor_critic.StackedMLP`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor, nn

from lightning_pg.envs import space_parts
from lightning_pg.errors import EnvError

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "elu": F.elu, "gelu": F.gelu, "silu": F.silu}


class MLP(nn.Module):
    """Linear + activation per hidden size (``[]``: the identity). Input ``[B, *shape]``, output ``[B, sizes[-1]]``."""

    def __init__(self, in_features: int, hidden_sizes: Sequence[int], activation: str):
        super().__init__()
        sizes = [in_features, *hidden_sizes]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        self.activation = ACTIVATIONS[activation]
        self.out_features = sizes[-1]

    def forward(self, x: Tensor) -> Tensor:
        x = flat_float(x, self.layers[0].weight.dtype if len(self.layers) else torch.float32)
        for layer in self.layers:  # F.linear in a loop, not nn.Sequential: acting on a few observations is
            x = self.activation(F.linear(x, layer.weight, layer.bias))  # mostly per-call overhead
        return x


def flat_float(x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Observations as a ``[B, features]`` matrix of the network's floating dtype (float32 unless the trainer's
    precision cast the weights, e.g. 64-true)."""
    if x.dim() != 2:
        x = x.flatten(1)
    return x if x.dtype == dtype else x.to(dtype)


def is_image_space(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def channels_first(shape: Sequence[int]) -> bool:
    """Whether an image is laid out ``[C, H, W]`` (e.g. stacked Atari frames, ``[4, 84, 84]``) rather than
    ``[H, W, C]``: its smallest dimension comes first."""
    return int(np.argmin(shape)) == 0


class NatureCNN(nn.Module):
    """Mnih et al. 2015 encoder. Input uint8 ``[B, H, W, C]`` (gymnasium's layout) or ``[B, C, H, W]`` (stacked
    frames), output ``[B, 512]``."""

    def __init__(self, observation_space: spaces.Box, features: int = 512):
        super().__init__()
        self.channels_first = channels_first(observation_space.shape)
        if self.channels_first:
            channels, height, width = observation_space.shape
        else:
            height, width, channels = observation_space.shape
        if min(height, width) < 36:
            raise EnvError(
                f"Images of {height}x{width} pixels ({observation_space}) are smaller than the Nature CNN's "
                "smallest input, 36x36. Fix: enlarge them (gymnasium.wrappers.ResizeObservation in env_wrappers), "
                "or make them a float Box (gymnasium.wrappers.DtypeObservation with dtype float32) to read them "
                "with an MLP."
            )
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
        images = obs if self.channels_first else obs.permute(0, 3, 1, 2)
        return self.fc(self.conv(images.float() / 255.0))


class MultiInputEncoder(nn.Module):
    """Dict and Tuple observations holding images, read from their flat float32 form ``[B, D]``: each image part
    is cut out, given back its shape and read by its own Nature CNN (256 features); the other parts pass as they
    are (one-hot, or the Box's values); all concatenated, in the space's order (SB3's CombinedExtractor).
    Output ``[B, out_features]``."""

    def __init__(self, observation_space: spaces.Space, image_features: int = 256):
        super().__init__()
        #: (start, stop, image shape or None) per run of the flat vector: an image, or parts passed as they are
        self.segments: list[tuple[int, int, tuple[int, ...] | None]] = []
        self.cnns, offset, self.out_features = nn.ModuleList(), 0, 0
        for _, part in space_parts(observation_space):
            size = spaces.flatdim(part)
            if is_image_space(part):
                self.cnns.append(NatureCNN(part, image_features))
                self.segments.append((offset, offset + size, tuple(part.shape)))
                self.out_features += image_features
            else:
                start = offset
                if self.segments and self.segments[-1][2] is None:  # beside the previous vector part: one run
                    start = self.segments.pop()[0]
                self.segments.append((start, offset + size, None))
                self.out_features += size
            offset += size

    def forward(self, obs: Tensor) -> Tensor:
        cnns, features = iter(self.cnns), []
        for start, stop, shape in self.segments:
            part = obs[:, start:stop]
            features.append(part if shape is None else next(cnns)(part.reshape(-1, *shape)))
        return torch.cat([f.to(obs.dtype) for f in features], dim=-1)


def flat_shape(observation_space: spaces.Space) -> tuple[int, ...]:
    """The shape of one observation as the networks read it: a Box's own, a flat vector otherwise."""
    if isinstance(observation_space, spaces.Box):
        return tuple(observation_space.shape)
    return (spaces.flatdim(observation_space),)


def has_images(observation_space: spaces.Space) -> bool:
    """Whether observations hold an image, alone or as a part of a Dict or Tuple: what a CNN reads."""
    return any(is_image_space(part) for _, part in space_parts(observation_space))


def image_encoder(observation_space: spaces.Space) -> NatureCNN | MultiInputEncoder:
    """The CNN part of the networks for observations that hold images."""
    if is_image_space(observation_space):
        return NatureCNN(observation_space)
    return MultiInputEncoder(observation_space)


def make_encoder(observation_space: spaces.Space, hidden_sizes: Sequence[int], activation: str) -> nn.Module:
    """An encoder with an ``out_features`` attribute: the CNNs (+ MLP) where observations hold images, an MLP over
    the flat observation otherwise."""
    if has_images(observation_space):
        cnn = image_encoder(observation_space)
        head = MLP(cnn.out_features, hidden_sizes, activation)
        encoder = nn.Sequential(cnn, head)
        encoder.out_features = head.out_features
        return encoder
    return MLP(spaces.flatdim(observation_space), hidden_sizes, activation)
