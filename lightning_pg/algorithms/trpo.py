r"""TRPO: trust region policy optimization (Schulman et al. 2015, https://arxiv.org/abs/1502.05477).

Improve the policy as much as the data allows, while staying close to the policy that collected it:

    maximize_θ   L(θ)  = E[ πθ(a|s) / π_old(a|s) · Â ]                    (the surrogate advantage)
    subject to   D̄(θ)  = E_s[ KL(π_old(·|s) ‖ πθ(·|s)) ]  ≤  δ              (δ = target_kl)

To first order in L and second order in D̄ (whose Hessian at θ_old is the Fisher matrix F) the solution is
a step along the natural gradient s = F⁻¹ g, g = ∇L, found by conjugate gradient from Fisher-vector products
Fv = ∇(∇D̄ · v) (F is never built), and scaled to the edge of the trust region, β = √(2δ / sᵀFs). A
backtracking line search then shrinks βs until the measured D̄ is within δ and L improved; when no step
qualifies the policy stays as it was. The value function is fitted apart from the policy step, by
``n_critic_updates`` epochs of Adam minibatch steps on (V(s) − R)². Â is GAE(λ) from the rollout.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from lightning_pg.algorithms.base import check
from lightning_pg.algorithms.on_policy import OnPolicyModule, explained_variance
from lightning_pg.errors import ConfigError
from lightning_pg.optim import assign, flat_grad


class TRPO(OnPolicyModule):
    """TRPO with sb3-contrib's defaults and names (so RL Zoo trpo.yml settings carry over one to one).

    Args:
        n_steps: steps per env per rollout (>= 1); a rollout is ``n_steps * num_envs`` transitions.
        batch_size: minibatch size of the critic's steps; must divide ``n_steps * num_envs``.
        gae_lambda: GAE λ in [0, 1].
        normalize_advantage: standardize Â over the rollout.
        target_kl: δ, the largest mean KL(π_old ‖ πθ) a policy step may make.
        cg_max_steps: conjugate gradient iterations for s = F⁻¹ g.
        cg_damping: λ added to the Fisher matrix (F + λI): keeps the solve stable where F is nearly singular.
        line_search_shrinking_factor: the backtracking factor applied to the step (0 < factor < 1).
        line_search_max_iter: steps tried before the policy step is given up.
        n_critic_updates: epochs of minibatch steps fitting V after each policy step.
        sub_sampling_factor: use every k-th step of each env for the policy step (its gradients and
            Fisher-vector products cost k times less); the critic always uses them all.
        learning_rate: the critic's Adam step size, a value or a schedule such as ``"lin_1e-3"``.
        **kwargs: see :class:`~lightning_pg.algorithms.on_policy.OnPolicyModule` and
            :class:`~lightning_pg.algorithms.base.RLModule`. ``ent_coef`` (0 by default, as in the paper) adds
            ent_coef · H[π] to L; ``max_grad_norm`` (None by default, as sb3-contrib) clips the critic's steps.

    Logged: ``loss/value`` (mean over the critic's steps), ``trpo/surrogate_gain`` (L(θ_new) − L(θ_old)),
    ``trpo/kl`` (the accepted step's mean KL, 0 when the step was given up), ``trpo/line_search_success``,
    ``trpo/step_fraction`` (the share of βs taken) and, for the rollouts whose metrics are written,
    ``trpo/entropy`` and ``trpo/explained_variance``.

    Differences from sb3-contrib: the constraint is KL(π_old ‖ πθ), as in the paper (sb3-contrib measures
    KL(πθ ‖ π_old); both have the Fisher matrix as Hessian at θ_old, and agree to second order); the policy
    step moves every parameter the policy depends on, found by autograd (sb3-contrib skips parameters by name).
    """

    def __init__(
        self,
        env_id: str,
        n_steps: int = 2048,
        batch_size: int = 128,
        gae_lambda: float = 0.95,
        normalize_advantage: bool = True,
        target_kl: float = 0.01,
        cg_max_steps: int = 15,
        cg_damping: float = 0.1,
        line_search_shrinking_factor: float = 0.8,
        line_search_max_iter: int = 10,
        n_critic_updates: int = 10,
        sub_sampling_factor: int = 1,
        learning_rate: float | str = 1e-3,
        max_grad_norm: float | None = None,
        **kwargs: Any,
    ):
        super().__init__(env_id=env_id, learning_rate=learning_rate, max_grad_norm=max_grad_norm, **kwargs)
        rollout = n_steps * self.hparams.num_envs if isinstance(n_steps, int) else 0
        check(isinstance(n_steps, int) and n_steps >= 1, "n_steps", n_steps, "an integer >= 1")
        check(isinstance(batch_size, int) and 1 <= batch_size <= rollout and rollout % batch_size == 0,
              "batch_size", batch_size, f"a divisor of the rollout size n_steps * num_envs = {rollout}")
        check(0.0 <= gae_lambda <= 1.0, "gae_lambda", gae_lambda, "in [0, 1]")
        check(target_kl > 0, "target_kl", target_kl, "> 0 (the trust region's size)")
        check(isinstance(cg_max_steps, int) and cg_max_steps >= 1, "cg_max_steps", cg_max_steps, "an integer >= 1")
        check(cg_damping >= 0, "cg_damping", cg_damping, ">= 0")
        check(0 < line_search_shrinking_factor < 1, "line_search_shrinking_factor", line_search_shrinking_factor,
              "in (0, 1)")
        check(isinstance(line_search_max_iter, int) and line_search_max_iter >= 1, "line_search_max_iter",
              line_search_max_iter, "an integer >= 1")
        check(isinstance(n_critic_updates, int) and n_critic_updates >= 0, "n_critic_updates", n_critic_updates,
              "an integer >= 0")
        check(isinstance(sub_sampling_factor, int) and 1 <= sub_sampling_factor <= max(n_steps, 1),
              "sub_sampling_factor", sub_sampling_factor, f"an integer from 1 to n_steps = {n_steps}")
        self.check_rollout(n_steps)

    # ---- the objective and its constraint ------------------------------------------------------------------
    def surrogate(self, dist: Any, batch: dict[str, Tensor]) -> Tensor:
        """L(θ) = E[ πθ(a|s) / π_old(a|s) · Â ]  (+ ent_coef · E[H[πθ(·|s)]] when ent_coef > 0); to maximize."""
        ratio = torch.exp(dist.log_prob(batch["actions"]) - batch["log_probs"])   # πθ(a|s) / π_old(a|s)
        objective = (ratio * batch["advantages"]).mean()
        if self.hparams.ent_coef:
            objective = objective + self.hparams.ent_coef * dist.entropy().mean()
        return objective

    def constraint(self, dist: Any, old: Any) -> Tensor:
        """D̄(θ) = E_s[ KL(π_old(·|s) ‖ πθ(·|s)) ], to keep within target_kl."""
        return old.kl(dist).mean()

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The critic's loss, vf_coef · (V(s) − R)² (the policy moves by :meth:`trust_region_step` instead)."""
        _, values = self.policy(batch["obs"])
        return {"loss_value": self.value_loss(values, batch)}

    # ---- the update ----------------------------------------------------------------------------------------
    def update(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        metrics = self.trust_region_step(batch)
        with torch.no_grad():
            stepped = self.policy.dist(batch["obs"])  # the policy as the line search left it
        optimizer = self.optimizers()
        self.set_learning_rate(optimizer)
        losses = [self.policy_step(mb, optimizer)["loss_value"].detach() for mb in self.critic_minibatches(batch)]
        if losses:
            metrics["loss_value"] = torch.stack(losses).mean()
        with torch.no_grad():
            if self.constraint(self.policy.dist(batch["obs"]), stepped) > 0:
                raise ConfigError(
                    f"{type(self).__name__}'s critic steps moved the policy after the line search kept it within "
                    "target_kl: its policy and value share weights, or its loss() has a policy term. Fix: give "
                    "the policy and the value separate networks in make_policy (the default ActorCritic.build "
                    "does) and keep loss() to the value regression; or use PPO or A2C."
                )
        return self.metric_names(self.with_diagnostics(metrics, batch))

    def trust_region_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """θ ← θ_old + β s, s = F⁻¹ g, β = √(2δ / sᵀFs), shrunk until D̄ ≤ δ and L improved (else θ stays)."""
        with torch.autocast(self.device.type, enabled=False):  # conjugate gradient and β in full precision
            return self._trust_region_step(batch)

    def _trust_region_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        hp = self.hparams
        # every sub_sampling_factor-th step of every env (rows are time-major: t · num_envs + env)
        data = {k: batch[k].view(hp.n_steps, hp.num_envs, *batch[k].shape[1:])[:: hp.sub_sampling_factor]
                .flatten(0, 1) for k in ("obs", "actions", "log_probs", "advantages")}
        if self.hparams.normalize_advantage:
            data["advantages"] = self.normalize_advantages(data["advantages"])
        with torch.no_grad():
            old = self.policy.dist(data["obs"])                                      # π_old(·|s)
        params = self._policy_parameters(data)
        dist = self.policy.dist(data["obs"])
        objective = self.surrogate(dist, data)                                       # L(θ_old)
        g = self.mean_over_ranks(flat_grad(objective, params, retain_graph=True))   # ∇L
        fisher_vector = self.fisher_vector_product(dist, old, params)               # v ↦ (F + λI) v
        direction = conjugate_gradient(fisher_vector, g, hp.cg_max_steps)            # s ≈ F⁻¹ g
        step = torch.sqrt(2 * hp.target_kl / (direction @ fisher_vector(direction)).clamp_min(1e-12)) * direction
        start = torch.cat([p.detach().reshape(-1) for p in params])
        with torch.no_grad():
            fraction = 1.0
            for _ in range(hp.line_search_max_iter):
                assign(params, start + fraction * step)
                dist = self.policy.dist(data["obs"])
                kl = self.mean_over_ranks(self.constraint(dist, old))
                gain = self.mean_over_ranks(self.surrogate(dist, data)) - self.mean_over_ranks(objective.detach())
                if kl <= hp.target_kl and gain > 0:
                    return {"surrogate_gain": gain, "kl": kl, "line_search_success": torch.tensor(1.0),
                            "step_fraction": torch.tensor(fraction)}
                fraction *= hp.line_search_shrinking_factor
            assign(params, start)  # no step kept the policy in the trust region and improved L
        zero = torch.zeros((), device=start.device)
        return {"surrogate_gain": zero, "kl": zero, "line_search_success": zero, "step_fraction": zero}

    def fisher_vector_product(self, dist: Any, old: Any, params: list[nn.Parameter]) -> Callable[[Tensor], Tensor]:
        """v ↦ (F + λI) v, with F the Hessian of D̄ at θ_old (the Fisher matrix): ∇(∇D̄ · v), two backward passes
        per product through the graph of ∇D̄ (zero at θ_old, but not its derivative), never F itself."""
        kl_grad = flat_grad(self.constraint(dist, old), params, create_graph=True)
        damping = self.hparams.cg_damping
        return lambda v: self.mean_over_ranks(flat_grad(kl_grad @ v, params, retain_graph=True)) + damping * v

    def _policy_parameters(self, data: dict[str, Tensor]) -> list[nn.Parameter]:
        """The parameters πθ depends on (a value head is not among them), found once."""
        found = getattr(self, "_policy_params", None)
        if found is None:
            params = [p for p in self.policy.parameters() if p.requires_grad]
            log_prob = self.policy.dist(data["obs"][:1]).log_prob(data["actions"][:1]).sum()
            grads = torch.autograd.grad(log_prob, params, allow_unused=True)
            found = self._policy_params = [p for p, grad in zip(params, grads) if grad is not None]
        return found

    def critic_minibatches(self, batch: dict[str, Tensor]) -> Iterator[dict[str, Tensor]]:
        """``n_critic_updates`` shuffled passes over the rollout in minibatches of ``batch_size``."""
        size, batch_size = len(batch["obs"]), self.hparams.batch_size
        for _ in range(self.hparams.n_critic_updates):
            order = torch.randperm(size, device=self.device)
            for start in range(0, size, batch_size):
                rows = order[start : start + batch_size]
                yield {"obs": batch["obs"][rows], "returns": batch["returns"][rows]}

    partial_backward = True  # the critic's steps leave the policy out (under DDP, so does its natural gradient)

    @torch.no_grad()
    def diagnostics(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        dist, _ = self.policy(batch["obs"])
        return {"entropy": dist.entropy().mean(),
                "explained_variance": explained_variance(batch["values"], batch["returns"])}

    def configure_optimizers(self) -> Any:
        # the critic's optimizer (Adam, eps 1e-5 as SB3's policies); the policy moves by trust_region_step
        return self.adam(self.optimized_parameters(), self.scheduled(self.hparams.learning_rate), eps=1e-5)


def conjugate_gradient(matrix_vector: Callable[[Tensor], Tensor], b: Tensor, max_steps: int,
                       tolerance: float = 1e-10) -> Tensor:
    """x ≈ A⁻¹ b for a symmetric positive-definite A given only as ``matrix_vector(v) = A v`` (Hestenes and
    Stiefel 1952): exact after as many steps as A has distinct eigenvalues; stops once rᵀr < ``tolerance``."""
    x = torch.zeros_like(b)
    residual, direction = b.clone(), b.clone()    # r = b − A x, p
    r_dot = residual @ residual
    for _ in range(max_steps):
        if r_dot < tolerance:
            break
        a_direction = matrix_vector(direction)
        alpha = r_dot / (direction @ a_direction)
        x += alpha * direction
        residual -= alpha * a_direction
        new_r_dot = residual @ residual
        direction = residual + (new_r_dot / r_dot) * direction
        r_dot = new_r_dot
    return x
