r"""The stochastic policy π(a|s) and the state value V(s) of REINFORCE, A2C and PPO, with their distributions.

``ActorCritic(body, pi_head, v_head, obs_rms)``: ``x = normalize(obs)`` (the identity unless observation
normalization is on); ``policy(x) -> (dist, values)`` where ``body(x)[0]`` are the policy's features and
``body(x)[1]`` the value's (a ``[members, B, h]`` tensor or a pair), ``dist = pi_head(body(x)[0])`` and
``values = v_head(body(x)[1]) [B]`` (None without a value head). The default body (:meth:`ActorCritic.build`)
is two separate MLPs of the same sizes, Stable-Baselines3's default for MLP policies (sharing a body couples
the value loss scale to the policy's features), stacked into one network (:class:`StackedMLP`, which the
twin Q critics use too); observations holding images get two CNN encoders. Any ``nn.Module`` whose output
indexes that way can be the body. gSDE (``use_sde``) replaces the Gaussian head by
:class:`StateDependentGaussianHead`.

Distributions (plain tensors, so they export; tests check them against ``torch.distributions``):
:class:`Categorical` (logits ``[B, n]``, actions ``[B]`` long; Discrete), :class:`MultiCategorical`
(MultiDiscrete: one categorical per entry, actions ``[B, k]`` long), :class:`Bernoulli` (MultiBinary, actions
``[B, k]`` of 0/1) and :class:`DiagGaussian` (Box: mean ``[B, d]``, a state-independent log-std ``[d]``,
actions ``[B, d]``). Each has ``sample``, ``log_prob``, ``entropy``, ``mode`` and ``kl(other)`` (KL(self ‖ other)
per row, TRPO's constraint).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor, nn

from lightning_pg.networks.encoders import ACTIVATIONS, flat_float, flat_shape, has_images, make_encoder
from lightning_pg.networks.normalize import RunningMeanStd

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class Categorical:
    """π(a|s) = softmax(logits)_a over ``n`` discrete actions. Shapes: logits ``[B, n]``, actions ``[B]``."""

    def __init__(self, logits: Tensor):
        self.log_probs = F.log_softmax(logits.float(), dim=-1)

    def sample(self) -> Tensor:
        # Gumbel-max: argmax(log p + Gumbel noise) is an exact sample, in fewer ops than torch.multinomial
        return (self.log_probs - torch.empty_like(self.log_probs).exponential_().log()).argmax(-1)

    def log_prob(self, actions: Tensor) -> Tensor:
        return self.log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> Tensor:
        return -(self.log_probs.exp() * self.log_probs).sum(-1)

    def kl(self, other: "Categorical") -> Tensor:
        """KL(self ‖ other) = Σ_a p(a) (log p(a) − log q(a)), ``[B]``."""
        return (self.log_probs.exp() * (self.log_probs - other.log_probs)).sum(-1)

    def mode(self) -> Tensor:
        return self.log_probs.argmax(-1)


class MultiCategorical:
    """Independent categoricals, one per entry of a MultiDiscrete: π(a|s) = Π_i softmax(logits_i)_{a_i}.

    Shapes: logits ``[B, Σ nvec]`` (entry i's ``nvec[i]`` logits in turn), actions ``[B, k]`` long."""

    def __init__(self, logits: Tensor, nvec: Sequence[int]):
        self.parts = [Categorical(part) for part in logits.split(list(nvec), dim=-1)]

    def sample(self) -> Tensor:
        return torch.stack([part.sample() for part in self.parts], -1)

    def log_prob(self, actions: Tensor) -> Tensor:
        return torch.stack([part.log_prob(actions[..., i]) for i, part in enumerate(self.parts)], -1).sum(-1)

    def entropy(self) -> Tensor:
        return torch.stack([part.entropy() for part in self.parts], -1).sum(-1)

    def kl(self, other: "MultiCategorical") -> Tensor:
        return torch.stack([mine.kl(theirs) for mine, theirs in zip(self.parts, other.parts)], -1).sum(-1)

    def mode(self) -> Tensor:
        return torch.stack([part.mode() for part in self.parts], -1)


class Bernoulli:
    """Independent binary actions (MultiBinary): π(a_i = 1|s) = sigmoid(logits_i).

    Shapes: logits ``[B, k]``, actions ``[B, k]`` of 0.0 and 1.0."""

    def __init__(self, logits: Tensor):
        self.logits = logits.float()

    def sample(self) -> Tensor:
        return (torch.rand_like(self.logits) < torch.sigmoid(self.logits)).float()

    def log_prob(self, actions: Tensor) -> Tensor:
        # log σ(l) for a = 1, log(1 − σ(l)) = log σ(−l) for a = 0: minus the binary cross-entropy, stable in l
        return -F.binary_cross_entropy_with_logits(self.logits, actions.float(), reduction="none").sum(-1)

    def entropy(self) -> Tensor:
        return F.binary_cross_entropy_with_logits(self.logits, torch.sigmoid(self.logits), reduction="none").sum(-1)

    def kl(self, other: "Bernoulli") -> Tensor:
        """Σ_i p_i (log p_i − log q_i) + (1 − p_i)(log(1 − p_i) − log(1 − q_i)), from the logits (stable)."""
        p = torch.sigmoid(self.logits)
        ones = F.logsigmoid(self.logits) - F.logsigmoid(other.logits)
        zeros = F.logsigmoid(-self.logits) - F.logsigmoid(-other.logits)
        return (p * ones + (1 - p) * zeros).sum(-1)

    def mode(self) -> Tensor:
        return (self.logits > 0).float()


class DiagGaussian:
    """π(a|s) = N(mean, diag(exp(log_std)²)).

    Shapes: mean ``[B, d]``, log_std ``[d]`` or ``[B, d]``, actions ``[B, d]``."""

    def __init__(self, mean: Tensor, log_std: Tensor):
        self.mean = mean.float()
        self.log_std = log_std.float().expand_as(self.mean)

    def sample(self) -> Tensor:
        return self.mean + self.log_std.exp() * torch.randn_like(self.mean)

    def log_prob(self, actions: Tensor) -> Tensor:
        z = (actions - self.mean) * torch.exp(-self.log_std)
        return (-0.5 * z.square() - self.log_std - LOG_SQRT_2PI).sum(-1)

    def entropy(self) -> Tensor:
        return (0.5 + LOG_SQRT_2PI + self.log_std).sum(-1)

    def kl(self, other: "DiagGaussian") -> Tensor:
        """Σ_i log(σ'_i/σ_i) + (σ_i² + (μ_i − μ'_i)²) / (2σ'_i²) − ½ for KL(self ‖ other), ``[B]``."""
        log_ratio = 2 * (self.log_std - other.log_std)  # log σ²/σ'²
        gap = (self.mean - other.mean) * torch.exp(-other.log_std)
        return 0.5 * (log_ratio.exp() + gap.square() - 1 - log_ratio).sum(-1)

    def mode(self) -> Tensor:
        return self.mean


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
        x = flat_float(x, self.weights[0].dtype if self.weights else torch.float32)
        if self._fuses(x):
            return _TanhMLPFunction.apply(x, *self.weights, *self.biases)
        return stacked_forward(x, self.weights, self.biases, self.activation, self.members)

    def _fuses(self, x: Tensor) -> bool:
        if (not self.fused or self.activation_name != "tanh" or not self.weights or torch.jit.is_tracing()
                or torch.compiler.is_compiling()):
            return False  # (exported and compiled graphs get the plain ops: numpy is not part of a graph)
        return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
                and self.members * x.shape[0] * self.weights[0].shape[-1] >= self.FUSED_MIN_ELEMENTS
                and not torch.is_autocast_enabled("cpu"))

    def member(self, x: Tensor, k: int) -> Tensor:
        """Member ``k``'s output alone, ``[B, sizes[-1]]``, as autograd ops: acting needs the policy's member
        only (and an exported graph then holds a few 2-D matrix products)."""
        x = flat_float(x, self.weights[0].dtype if self.weights else torch.float32)
        return stacked_forward(x, [w[k] for w in self.weights], [b[k] for b in self.biases], self.activation, None)

    @torch.no_grad()
    def orthogonal_(self, gain: float) -> None:
        """Orthogonal weights (each member's [out, in] matrix, as for ``nn.Linear``) and zero biases."""
        for weight, bias in zip(self.weights, self.biases):
            for member in weight:
                member.copy_(nn.init.orthogonal_(torch.empty(member.T.shape), gain).T)
            bias.zero_()


def stacked_forward(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], activation: Callable,
                    members: int | None) -> Tensor:
    """The stacked layers as autograd ops: ``h_k = act(b_k + h_{k-1} w_k)``, ``h_0 = x`` for every member.
    ``members=None``: one member's ``[in, out]`` weights and ``[1, out]`` biases, ``[B, out]`` out."""
    h = x if members is None else x.expand(members, *x.shape)  # [n, B, in]: every member sees the same input
    for weight, bias in zip(weights, biases):
        # [n, B, out] = b + h @ w, all members at once (one member: the same as 2-D matrices)
        h = activation(torch.addmm(bias, h, weight) if members is None else torch.baddbmm(bias, h, weight))
    return h


class _TanhMLPFunction(torch.autograd.Function):
    """A tanh :class:`StackedMLP`'s layers on the CPU as one autograd node: ``h_k = tanh(b_k + h_{k-1} w_k)``.

    Why: torch's CPU tanh kernel is several times slower than numpy's on the same float32 array, and a node
    per layer op costs autograd's bookkeeping. The forward keeps each layer's output; the backward walks them
    back: dL/d(pre-act) = g (1 − h_k²), dL/dw_k = h_{k-1}ᵀ g, dL/db_k = Σ_B g, dL/dh_{k-1} = g w_kᵀ. A backward
    that will itself be differentiated (``create_graph``: a gradient penalty, a Hessian-vector product) runs
    the layers again as autograd ops instead, so second derivatives are exact too (``gradgradcheck``).
    """

    @staticmethod
    def forward(ctx, x: Tensor, *params: Tensor) -> Tensor:
        weights, biases = params[: len(params) // 2], params[len(params) // 2 :]
        h = x.expand(len(weights[0]), *x.shape)
        outputs = []
        for weight, bias in zip(weights, biases):
            h = torch.baddbmm(bias, h, weight)
            np.tanh(h.numpy(), out=h.numpy())  # in place, on the fresh tensor
            outputs.append(h)
        ctx.save_for_backward(x, *params, *outputs)
        return h

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple:
        x, *saved = ctx.saved_tensors
        layers = len(saved) // 3
        weights, biases, outputs = saved[:layers], saved[layers : 2 * layers], [x, *saved[2 * layers :]]
        needs = ctx.needs_input_grad  # (x, *weights, *biases)
        if torch.is_grad_enabled():  # create_graph: differentiate the same layers as autograd ops, differentiable again
            inputs = [t for t, need in zip((x, *weights, *biases), needs) if need]
            h = stacked_forward(x, weights, biases, torch.tanh, len(weights[0]))
            found = iter(torch.autograd.grad(h, inputs, grad, create_graph=True))
            return tuple(next(found) if need else None for need in needs)
        outputs[0] = x.expand(len(weights[0]), *x.shape)
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


class Linear(nn.Module):
    """``y = b + x w`` with ``w`` stored ``[in, out]`` (one ``addmm``; ``nn.Linear``'s ``[out, in]`` adds a
    transpose node to every backward). ``out_features=None``: one number per row, ``y [B]`` (one ``addmv``).
    ``nn.Linear``'s default initialization."""

    def __init__(self, in_features: int, out_features: int | None):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        shape = (in_features,) if out_features is None else (in_features, out_features)
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(shape[1:]).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.dim() == 2:
            return torch.addmm(self.bias, x, self.weight)
        if torch.is_autocast_enabled(x.device.type):  # a value for GAE and its regression: float32, not bf16/fp16
            return (x.to(self.weight.dtype) * self.weight).sum(-1) + self.bias
        return torch.addmv(self.bias, x, self.weight)

    @torch.no_grad()
    def orthogonal_(self, gain: float) -> None:
        """Orthogonal weights as ``nn.init.orthogonal_`` makes them for ``nn.Linear`` ([out, in]), zero bias."""
        rows = 1 if self.weight.dim() == 1 else self.weight.shape[1]
        weight = nn.init.orthogonal_(torch.empty(rows, self.weight.shape[0]), gain)
        self.weight.copy_(weight.T.reshape(self.weight.shape))
        self.bias.zero_()


class CategoricalHead(Linear):
    def forward(self, features: Tensor) -> Categorical:
        return Categorical(super().forward(features))


class MultiCategoricalHead(Linear):
    def __init__(self, in_features: int, nvec: Sequence[int]):
        super().__init__(in_features, int(sum(nvec)))
        self.nvec = [int(n) for n in nvec]

    def forward(self, features: Tensor) -> MultiCategorical:
        return MultiCategorical(super().forward(features), self.nvec)


class BernoulliHead(Linear):
    def forward(self, features: Tensor) -> Bernoulli:
        return Bernoulli(super().forward(features))


class GaussianHead(nn.Module):
    def __init__(self, in_features: int, act_dim: int, log_std_init: float):
        super().__init__()
        self.mean = Linear(in_features, act_dim)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def forward(self, features: Tensor) -> DiagGaussian:
        return DiagGaussian(self.mean(features), self.log_std)


class StateDependentGaussian(DiagGaussian):
    """gSDE's policy (Raffin et al. 2022): a = μ(s) + ε(s), ε(s) = z(s) E, with z(s) the policy's features (not
    differentiated through) and E ~ N(0, σ²) a ``[features, d]`` exploration matrix held for several steps
    (one per env). So a ~ N(μ(s), diag(z(s)² σ²)): log_prob, entropy and kl are those of that Gaussian.

    Shapes: mean ``[B, d]``, features ``[B, h]``, exploration ``[n, h, d]`` (a matrix per row when n == B,
    else the first one for every row)."""

    def __init__(self, mean: Tensor, features: Tensor, std: Tensor, exploration: Tensor):
        # in float32 whatever the weights' precision or an autocast region: σ(s)'s log enters every log-prob
        with torch.autocast(features.device.type, enabled=False):
            variance = features.float().square() @ std.float().square()
        super().__init__(mean, 0.5 * torch.log(variance + 1e-6))
        self.features, self.exploration = features.float(), exploration.float()

    def sample(self) -> Tensor:
        with torch.autocast(self.features.device.type, enabled=False):
            if len(self.exploration) == len(self.features):
                return self.mean + torch.bmm(self.features.unsqueeze(1), self.exploration).squeeze(1)
            return self.mean + self.features @ self.exploration[0]


class StateDependentGaussianHead(GaussianHead):
    """gSDE's head (SB3's ``use_sde``): the mean as :class:`GaussianHead`'s, and a learned ``log_std`` per
    feature and action (``full_std``) or per feature; ``use_expln`` maps it to σ with exp below 0 and
    log1p(x) + 1 above (σ grows slowly, as SB3's option). :meth:`reset_noise` draws the exploration matrices."""

    def __init__(self, in_features: int, act_dim: int, log_std_init: float, full_std: bool = True,
                 use_expln: bool = False):
        super().__init__(in_features, act_dim, log_std_init)
        self.log_std = nn.Parameter(torch.full((in_features, act_dim if full_std else 1), float(log_std_init)))
        self.act_dim, self.use_expln = act_dim, use_expln
        self.register_buffer("exploration", torch.zeros(1, in_features, act_dim), persistent=False)
        self.reset_noise(1)

    def std(self) -> Tensor:
        """σ ``[features, d]``."""
        if self.use_expln:
            std = torch.where(self.log_std <= 0, self.log_std.exp(), torch.log1p(self.log_std.clamp_min(0)) + 1)
        else:
            std = self.log_std.exp()
        return std.expand(-1, self.act_dim)

    @torch.no_grad()
    def reset_noise(self, n: int) -> None:
        """New exploration matrices E ~ N(0, σ²), one per env (``n``)."""
        std = self.std()
        self.exploration = torch.randn(n, *std.shape, device=std.device, dtype=std.dtype) * std

    def forward(self, features: Tensor) -> StateDependentGaussian:
        return StateDependentGaussian(self.mean(features), features.detach(), self.std(), self.exploration)


class TwinEncoders(nn.Module):
    """Separate policy and value encoders (CNNs for images): ``forward(x) -> (pi_features, v_features)``."""

    def __init__(self, pi: nn.Module, v: nn.Module | None):
        super().__init__()
        self.pi, self.v = pi, v

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.pi(x), None if self.v is None else self.v(x)


class ActorCritic(nn.Module):
    """The on-policy algorithms' policy π(a|s) and value V(s) on one body: ``policy(x) -> (dist, values)``.

    Args:
        body: ``x [B, *obs_shape]`` -> features indexed ``[0]`` (policy, ``[B, h]``) and ``[1]`` (value).
        pi_head: policy features -> a :class:`Categorical` or :class:`DiagGaussian`.
        v_head: value features -> ``[B]``, or None (REINFORCE without a baseline).
        obs_rms: running observation statistics, or None (no observation normalization).
    """

    def __init__(self, body: nn.Module, pi_head: nn.Module, v_head: nn.Module | None, obs_rms: RunningMeanStd | None):
        super().__init__()
        self.body, self.pi_head, self.v_head, self.obs_rms = body, pi_head, v_head, obs_rms

    @classmethod
    def build(
        cls,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        hidden_sizes: Sequence[int],
        activation: str,
        with_value: bool,
        ortho_init: bool,
        log_std_init: float,
        normalize_obs: bool,
        use_sde: bool = False,
        full_std: bool = True,
        use_expln: bool = False,
    ) -> "ActorCritic":
        """The standard policy for these spaces (the env's own observation space, the algorithm's
        hyperparameters)."""
        if has_images(observation_space):
            encoder = lambda: make_encoder(observation_space, hidden_sizes, activation)  # noqa: E731
            body = TwinEncoders(encoder(), encoder() if with_value else None)
            features = body.pi.out_features
        else:
            members = 2 if with_value else 1
            body = StackedMLP(spaces.flatdim(observation_space), hidden_sizes, activation, members)
            features = body.out_features
        if isinstance(action_space, spaces.Discrete):
            pi_head = CategoricalHead(features, int(action_space.n))
        elif isinstance(action_space, spaces.MultiDiscrete):
            pi_head = MultiCategoricalHead(features, action_space.nvec.ravel().tolist())
        elif isinstance(action_space, spaces.MultiBinary):
            pi_head = BernoulliHead(features, int(np.prod(action_space.shape)))
        elif use_sde:
            pi_head = StateDependentGaussianHead(features, int(np.prod(action_space.shape)), log_std_init, full_std,
                                                 use_expln)
        else:
            pi_head = GaussianHead(features, int(np.prod(action_space.shape)), log_std_init)
        obs_rms = RunningMeanStd(flat_shape(observation_space)) if normalize_obs else None
        policy = cls(body, pi_head, Linear(features, None) if with_value else None, obs_rms)
        if ortho_init:
            policy.orthogonal_init()
        return policy

    def forward(self, x: Tensor) -> tuple[Categorical | DiagGaussian, Tensor | None]:
        """π(·|x) and V(x) (None without a value head) of normalized observations ``x``, in one pass."""
        features = self.body(x)
        if isinstance(features, Tensor):  # a stacked body, [members, B, h]: one unbind rather than an index per member
            features = features.unbind(0)
        return self.pi_head(features[0]), None if self.v_head is None else self.v_head(features[1])

    def dist(self, x: Tensor) -> Categorical | DiagGaussian:
        return self(x)[0]

    def policy_dist(self, x: Tensor) -> Categorical | DiagGaussian:
        """π(·|x) alone, for acting: where the body keeps the policy's part apart (the stacked MLP's member 0,
        the twin encoders' policy encoder), V(x) is not computed. A subclass that overrides ``forward`` or
        ``dist``, or forward hooks on this module or its body, get the whole ``dist`` here, so acting never
        bypasses them."""
        hooked = any(m._forward_hooks or m._forward_pre_hooks for m in (self, self.body))
        own = type(self).forward is ActorCritic.forward and type(self).dist is ActorCritic.dist and not hooked
        if own and type(self.body) is StackedMLP:
            return self.pi_head(self.body.member(x, 0))
        if own and type(self.body) is TwinEncoders:
            return self.pi_head(self.body.pi(x))
        return self.dist(x)

    def value(self, x: Tensor) -> Tensor:
        return self(x)[1]

    def normalize(self, obs: Tensor) -> Tensor:
        """Observations as the networks see them (running-normalized when that is on; statistics unchanged)."""
        return obs if self.obs_rms is None else self.obs_rms.normalize(obs)

    def observe(self, obs: Tensor) -> Tensor:
        """New observations from training envs: update the running statistics, return them normalized."""
        if self.obs_rms is not None:
            self.obs_rms.update(obs)
        return self.normalize(obs)

    def reset_noise(self, n: int) -> None:
        """New exploration noise for ``n`` envs where the policy holds some (gSDE), else nothing."""
        if isinstance(self.pi_head, StateDependentGaussianHead):
            self.pi_head.reset_noise(n)

    @torch.no_grad()
    def act(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Training rollouts: sampled actions, their log-probs ``[B]`` and V(x) ``[B]`` for normalized ``x``."""
        dist, values = self(x)
        actions = dist.sample()
        return actions, dist.log_prob(actions), values

    def orthogonal_init(self) -> None:
        """PPO's init (Andrychowicz et al. 2021): hidden gain √2, policy output 0.01, value output 1."""
        for layer in self.body.modules():
            if isinstance(layer, StackedMLP):
                layer.orthogonal_(math.sqrt(2))
            elif isinstance(layer, (nn.Linear, nn.Conv2d)):
                nn.init.orthogonal_(layer.weight, math.sqrt(2))
                nn.init.zeros_(layer.bias)
        (self.pi_head.mean if isinstance(self.pi_head, GaussianHead) else self.pi_head).orthogonal_(0.01)
        if self.v_head is not None:
            self.v_head.orthogonal_(1.0)
