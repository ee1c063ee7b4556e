"""Observation encoders and MLP bodies.

- :class:`MLP`: linear + activation per hidden size, ``[B, *shape] -> [B, sizes[-1]]``.
- :class:`StackedMLP`: ``n`` MLPs of the same sizes over the same input, held as one network (layer ``k``
  keeps its weights as ``[n, in, out]`` and runs one ``torch.baddbmm`` for all members):
  ``[B, in] -> [n, B, sizes[-1]]``. The policy and value bodies of an actor-critic, and twin Q critics.
- :class:`NatureCNN` and :func:`make_encoder`: images get the Nature-DQN CNN (then an MLP).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor, nn

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
        x = _flat_float(x)
        for layer in self.layers:  # F.linear in a loop, not nn.Sequential: acting on a few observations is
            x = self.activation(F.linear(x, layer.weight, layer.bias))  # mostly per-call overhead
        return x


class StackedMLP(nn.Module):
    """``members`` independent MLPs of the same sizes over the same input, as one network.

    The maths is that of ``members`` separate ``nn.Linear`` MLPs (same default initialization, independent
    parameters); the op count is that of one. Shapes: ``forward(x [B, *shape]) -> [members, B, sizes[-1]]``
    (``[]`` hidden sizes: the input, repeated per member).

    tanh bodies on the CPU with enough rows run as one autograd node (:class:`_TanhMLPFunction`, checked with
    ``gradcheck``) whose forward uses numpy's tanh; anything computed from the output (heads, any loss) is
    differentiated by autograd as usual. Elsewhere the same layers run as ordinary autograd ops.
    ``StackedMLP.fused = False`` forces those everywhere.
    """

    fused = True  # use _TanhMLPFunction where it applies (tests and benchmarks switch it off)
    #: the smallest layer output (members x rows x width) for which that node pays: below it the Python node's
    #: own cost exceeds what numpy's tanh saves (benchmarks/update_step.py: PPO's 256-row minibatches gain, A2C's
    #: 40-row batches do not)
    FUSED_MIN_ELEMENTS = 16_384

    def __init__(self, in_features: int, hidden_sizes: Sequence[int], activation: str, members: int):
        super().__init__()
        sizes = [in_features, *hidden_sizes]
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default init, member by member
            self.weights.append(nn.Parameter(torch.empty(members, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, fan_out).uniform_(-bound, bound)))
        self.activation_name = activation
        self.activation = ACTIVATIONS[activation]
        self.members, self.out_features = members, sizes[-1]

    def forward(self, x: Tensor) -> Tensor:
        x = _flat_float(x)
        if not self.weights:
            return x.expand(self.members, *x.shape)
        if self._fuses(x):
            return _TanhMLPFunction.apply(x, *self.weights, *self.biases)
        h = x.expand(self.members, *x.shape)  # [n, B, in]: every member sees the same input
        for weight, bias in zip(self.weights, self.biases):
            h = self.activation(torch.baddbmm(bias, h, weight))  # [n, B, out] = b + h @ w, all members at once
        return h

    def _fuses(self, x: Tensor) -> bool:
        if not self.fused or self.activation_name != "tanh" or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return False  # (exported and compiled graphs get the plain ops: numpy is not part of a graph)
        return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and self.weights[0].dtype == x.dtype
                and self.members * x.shape[0] * self.weights[0].shape[-1] >= self.FUSED_MIN_ELEMENTS
                and not torch.is_autocast_enabled("cpu"))

    @torch.no_grad()
    def orthogonal_(self, gain: float) -> None:
        """Orthogonal weights (each member's [out, in] matrix, as for ``nn.Linear``) and zero biases."""
        for weight, bias in zip(self.weights, self.biases):
            for member in weight:
                member.copy_(nn.init.orthogonal_(torch.empty(member.T.shape), gain).T)
            bias.zero_()


class _TanhMLPFunction(torch.autograd.Function):
    """A tanh :class:`StackedMLP`'s layers on the CPU as one autograd node: ``h_k = tanh(b_k + h_{k-1} w_k)``.

    Why: torch's CPU tanh kernel is several times slower than numpy's on the same float32 array, and a node
    per layer op costs autograd's bookkeeping. The forward keeps each layer's output; the backward walks them
    back: dL/d(pre-act) = g (1 − h_k²), dL/dw_k = h_{k-1}ᵀ g, dL/db_k = Σ_B g, dL/dh_{k-1} = g w_kᵀ.
    """

    @staticmethod
    def forward(ctx, x: Tensor, *params: Tensor) -> Tensor:
        weights, biases = params[: len(params) // 2], params[len(params) // 2 :]
        h = x.expand(len(weights[0]), *x.shape)
        outputs = [h]
        for weight, bias in zip(weights, biases):
            h = torch.baddbmm(bias, h, weight)
            np.tanh(h.numpy(), out=h.numpy())  # in place, on the fresh tensor
            outputs.append(h)
        ctx.save_for_backward(*outputs, *weights)
        return h

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple:
        saved = ctx.saved_tensors
        layers = len(saved) // 2
        outputs, weights = saved[: layers + 1], saved[layers + 1 :]
        needs = ctx.needs_input_grad  # (x, *weights, *biases)
        grad_weights, grad_biases = [None] * layers, [None] * layers
        for k in reversed(range(layers)):
            grad = torch.ops.aten.tanh_backward(grad, outputs[k + 1])  # dL/d(pre-activation), [n, B, out]
            if needs[1 + k]:
                grad_weights[k] = torch.bmm(outputs[k].transpose(1, 2), grad)
            if needs[1 + layers + k]:
                grad_biases[k] = grad.sum(1, keepdim=True)
            if k or needs[0]:
                grad = torch.bmm(grad, weights[k].transpose(1, 2))
        return (grad.sum(0) if needs[0] else None, *grad_weights, *grad_biases)  # every member read the same x


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


def make_encoder(observation_space: spaces.Box, hidden_sizes: Sequence[int], activation: str) -> nn.Module:
    """An encoder with an ``out_features`` attribute: CNN (+ MLP) for uint8 images, MLP otherwise."""
    if is_image_space(observation_space):
        cnn = NatureCNN(observation_space)
        head = MLP(cnn.out_features, hidden_sizes, activation)
        encoder = nn.Sequential(cnn, head)
        encoder.out_features = head.out_features
        return encoder
    return MLP(int(np.prod(observation_space.shape)), hidden_sizes, activation)
