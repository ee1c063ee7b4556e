"""The floor: SAC and TD3 updates in bare PyTorch (no Lightning, no lightning_pg), same maths as ours and SB3.

    python benchmarks/bare_offpolicy.py                       # per-update ms, every variant below, SAC and TD3
    python benchmarks/bare_offpolicy.py --algo sac --updates 500 --variants fused fused+bf16
    python benchmarks/bare_offpolicy.py --env-steps 5000 --algo sac --variants fused   # whole loop on Pendulum

Per-update: median of ``--repeats`` timings of ``--updates`` updates each on random replay data (batch 256,
Pendulum shapes: obs 3, action 1), after a warm-up. Variants:

- ``separate``: two critic MLPs of ``nn.Linear`` (SB3's and CleanRL's layout), critics unfrozen in the actor
  loss (SB3 computes the critic's weight gradients there and throws them away);
- ``fused``: both critics as one stacked MLP (``torch.baddbmm`` over 2 members), critic frozen in the actor
  loss (only the input gradient is needed), fused Adam, ``torch._foreach_lerp_`` Polyak update;
- ``+bf16``: the same under ``torch.autocast("cpu", torch.bfloat16)`` (the autocast weight cache is
  cleared after every optimizer step, otherwise the next forward would use the old weights);
- ``+compile``: ``torch.compile`` on the network forwards.

``--env-steps N`` runs the whole SB3-shaped loop on Pendulum-v1 (random actions for ``--learning-starts``
steps, then one env step and one update per step) and prints its wall time: compare with
``benchmarks/vs_sb3.py``.
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OBS, ACT, BATCH = 3, 1, 256


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class SeparateQ(nn.Module):
    def __init__(self, hidden: list[int], n: int):
        super().__init__()
        self.qs = nn.ModuleList(mlp([OBS + ACT, *hidden, 1]) for _ in range(n))

    def forward(self, obs: Tensor, act: Tensor) -> Tensor:  # [n, B]
        x = torch.cat([obs, act], -1)
        return torch.stack([q(x).squeeze(-1) for q in self.qs])


class FusedQ(nn.Module):
    """n critics as one stacked MLP: weights [n, in, out], one baddbmm per layer."""

    def __init__(self, hidden: list[int], n: int):
        super().__init__()
        sizes = [OBS + ACT, *hidden, 1]
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:]):
            bound = 1 / math.sqrt(a)
            self.weights.append(nn.Parameter(torch.empty(n, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n, 1, b).uniform_(-bound, bound)))
        self.n = n

    def forward(self, obs: Tensor, act: Tensor) -> Tensor:  # [n, B]
        x = torch.cat([obs, act], -1).expand(self.n, -1, -1)
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            x = F.relu(torch.baddbmm(b, x, w))
        return (x * self.weights[-1].transpose(1, 2)).sum(-1) + self.biases[-1].squeeze(-1)


class GaussianActor(nn.Module):
    def __init__(self, hidden: list[int]):
        super().__init__()
        self.body = nn.Sequential(mlp([OBS, *hidden]), nn.ReLU())
        self.head = nn.Linear(hidden[-1], 2 * ACT)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.head(self.body(obs)).float().chunk(2, -1)
        log_std = log_std.clamp(-20, 2)
        u = mean + log_std.exp() * torch.randn_like(mean)
        log_prob = (-0.5 * ((u - mean) / log_std.exp()).square() - log_std - 0.5 * math.log(2 * math.pi))
        log_prob = log_prob - 2 * (math.log(2) - u - F.softplus(-2 * u))
        return torch.tanh(u), log_prob.sum(-1)


def deterministic_actor(hidden: list[int]) -> nn.Sequential:
    return nn.Sequential(mlp([OBS, *hidden, ACT]), nn.Tanh())


def adam(params, lr: float, fused: bool) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, fused=fused)


class Setup:
    def __init__(self, algo: str, variant: str):
        self.fused = variant.startswith("fused")
        self.bf16 = "bf16" in variant
        self.algo = algo
        hidden = [256, 256] if algo == "sac" else [400, 300]
        critic_cls = FusedQ if self.fused else SeparateQ
        self.critic = critic_cls(hidden, 2)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        if algo == "sac":
            self.actor = GaussianActor(hidden)
            self.log_alpha = torch.zeros(1, requires_grad=True)
            self.alpha_opt = adam([self.log_alpha], 3e-4, self.fused)
        else:
            self.actor = deterministic_actor(hidden)
            self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.actor_opt = adam(self.actor.parameters(), 1e-3, self.fused)
        self.critic_opt = adam(self.critic.parameters(), 1e-3, self.fused)
        self.actor_fn, self.critic_fn, self.target_fn = self.actor, self.critic, self.critic_target
        if "compile" in variant:
            self.actor_fn, self.critic_fn, self.target_fn = (torch.compile(m) for m in
                                                             (self.actor, self.critic, self.critic_target))
        self.pairs = [(list(self.critic_target.parameters()), list(self.critic.parameters()))]
        if algo != "sac":
            self.pairs.append((list(self.actor_target.parameters()), list(self.actor.parameters())))
        self.updates = 0

    def step(self, loss: Tensor, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if self.bf16:
            torch.clear_autocast_cache()  # the cached bf16 copies of the weights are stale now

    def polyak(self, tau: float = 0.005) -> None:
        with torch.no_grad():
            for target, source in self.pairs:
                if self.fused:
                    torch._foreach_lerp_(target, source, tau)
                else:  # SB3's polyak_update
                    for t, s in zip(target, source):
                        t.mul_(1 - tau).add_(s, alpha=tau)

    def update(self, obs, act, rew, next_obs, term) -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            (self.sac if self.algo == "sac" else self.td3)(obs, act, rew, next_obs, term)

    def sac(self, obs, act, rew, next_obs, term, gamma: float = 0.99) -> None:
        a_pi, logp = self.actor_fn(obs)
        alpha = self.log_alpha.detach().exp()
        self.step(-(self.log_alpha * (logp + (-ACT)).detach()).mean(), self.alpha_opt)
        with torch.no_grad():
            a2, logp2 = self.actor_fn(next_obs)
            q_next = self.target_fn(next_obs, a2).float().min(0).values - alpha * logp2
            y = rew + gamma * (1 - term) * q_next
        q = self.critic_fn(obs, act).float()
        self.step(0.5 * F.mse_loss(q, y.expand_as(q), reduction="none").mean(1).sum(), self.critic_opt)
        if self.fused:
            self.critic.requires_grad_(False)
        q_pi = self.critic_fn(obs, a_pi).float().min(0).values
        self.step((alpha * logp - q_pi).mean(), self.actor_opt)
        if self.fused:
            self.critic.requires_grad_(True)
        self.polyak()

    def td3(self, obs, act, rew, next_obs, term, gamma: float = 0.98) -> None:
        self.updates += 1
        with torch.no_grad():
            noise = (torch.randn_like(act) * 0.2).clamp(-0.5, 0.5)
            a2 = (self.actor_target(next_obs).float() + noise).clamp(-1, 1)
            y = rew + gamma * (1 - term) * self.target_fn(next_obs, a2).float().min(0).values
        q = self.critic_fn(obs, act).float()
        self.step(F.mse_loss(q, y.expand_as(q), reduction="none").mean(1).sum(), self.critic_opt)
        if self.updates % 2 == 0:
            if self.fused:
                self.critic.requires_grad_(False)
            self.step(-self.critic_fn(obs, self.actor_fn(obs))[0].float().mean(), self.actor_opt)
            if self.fused:
                self.critic.requires_grad_(True)
            self.polyak()


def random_batch() -> tuple[Tensor, ...]:
    return (torch.randn(BATCH, OBS), torch.rand(BATCH, ACT) * 2 - 1, torch.randn(BATCH), torch.randn(BATCH, OBS),
            (torch.rand(BATCH) < 0.01).float())


def time_updates(algo: str, variant: str, updates: int, repeats: int, warmup: int) -> float:
    torch.manual_seed(0)
    setup = Setup(algo, variant)
    batch = random_batch()
    for _ in range(warmup):
        setup.update(*batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(updates):
            setup.update(*batch)
        times.append((time.perf_counter() - start) / updates * 1e3)
    return statistics.median(times)


def ours_updates(algo: str, variant: str, updates: int, warmup: int) -> float:
    """Median ms of lightning_pg's own ``update()`` (one gradient step on one minibatch), timed inside a real
    ``Trainer.fit`` on Pendulum-v1 with the same settings (``ours``, ``ours+bf16`` = precision bf16-mixed)."""
    import pytorch_lightning as pl

    import lightning_pg

    times: list[float] = []

    class Timed(getattr(lightning_pg, algo.upper())):
        def update(self, batch):
            start = time.perf_counter()
            out = super().update(batch)
            if "obs" in batch:
                times.append(time.perf_counter() - start)
            return out

    pl.seed_everything(0)
    extra = dict(learning_rate=1e-3) if algo == "sac" else dict(gamma=0.98)
    model = Timed(env_id="Pendulum-v1", total_timesteps=100 + warmup + updates, learning_starts=100, eval_every=-1,
                  matmul_precision="medium" if "medium" in variant else "highest", **extra)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                         accelerator="cpu", max_epochs=-1, precision="bf16-mixed" if "bf16" in variant else "32-true")
    trainer.fit(model)
    return statistics.median(times[warmup:]) * 1e3


def env_loop(algo: str, variant: str, env_steps: int, learning_starts: int) -> float:
    """SB3-shaped loop on Pendulum-v1: one env step, one replay sample, one update per step."""
    import gymnasium as gym

    torch.manual_seed(0)
    setup = Setup(algo, variant)
    env = gym.make("Pendulum-v1")
    storage = {k: torch.zeros(env_steps, *s) for k, s in
               (("obs", (OBS,)), ("act", (ACT,)), ("rew", ()), ("next_obs", (OBS,)), ("term", ()))}
    obs, _ = env.reset(seed=0)
    start = time.perf_counter()
    for t in range(env_steps):
        obs_t = torch.from_numpy(obs)
        if t < learning_starts:
            action = torch.rand(ACT) * 2 - 1
        else:
            with torch.no_grad():
                action = setup.actor(obs_t[None])[0][0] if algo == "sac" else (
                    setup.actor(obs_t[None])[0] + 0.1 * torch.randn(ACT)).clamp(-1, 1)
        next_obs, reward, terminated, truncated, _ = env.step(action.numpy() * 2.0)
        for k, v in (("obs", obs_t), ("act", action), ("rew", reward), ("next_obs", torch.from_numpy(next_obs)),
                     ("term", float(terminated))):
            storage[k][t] = v
        obs = env.reset()[0] if terminated or truncated else next_obs
        if t >= learning_starts:
            idx = torch.randint(0, t + 1, (BATCH,))
            setup.update(*(storage[k][idx] for k in ("obs", "act", "rew", "next_obs", "term")))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--algo", choices=["sac", "td3", "both"], default="both")
    parser.add_argument("--variants", nargs="+",
                        default=["separate", "fused", "separate+bf16", "fused+bf16", "fused+compile"])
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--env-steps", type=int, default=0)
    parser.add_argument("--learning-starts", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (lightning_pg and vs_sb3 use 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for algo in ["sac", "td3"] if args.algo == "both" else [args.algo]:
        for variant in args.variants:
            torch.set_float32_matmul_precision("medium" if "medium" in variant else "highest")
            if args.env_steps:
                wall = env_loop(algo, variant, args.env_steps, args.learning_starts)
                print(f"{algo} {variant:18s} Pendulum {args.env_steps} env steps: {wall:7.2f} s", flush=True)
            elif variant.startswith("ours"):
                ms = ours_updates(algo, variant, args.updates * args.repeats, args.warmup)
                print(f"{algo} {variant:18s} {ms:6.2f} ms per update (lightning_pg, inside Trainer.fit)", flush=True)
            else:
                warmup = args.warmup * (10 if "compile" in variant else 1)
                ms = time_updates(algo, variant, args.updates, args.repeats, warmup)
                print(f"{algo} {variant:18s} {ms:6.2f} ms per update", flush=True)


if __name__ == "__main__":
    main()
