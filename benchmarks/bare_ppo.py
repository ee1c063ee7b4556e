"""PPO in a bare PyTorch loop: the same math as lightning_pg.PPO, with no Lightning and no CLI.

    python benchmarks/bare_ppo.py [--config configs/ppo_cartpole.yaml] [--steps 200000] [--seed 0]

It reads the PPO hyperparameters of a config and repeats what the CLI run does, step for step: the same
vector env, the same networks and init (ActorCritic.build: the stacked body), rollouts acting in numpy
(NumpyActor, as lightning_pg does on the CPU) with V(s_T) and the cuts' values in one more pass and GAE,
n_epochs of minibatch steps on the textbook PPO loss under autograd with fused Adam on contiguous parameters
and gradient clipping on their one flat gradient, linear schedules, a deterministic evaluation every
eval_every env steps, a checkpoint (torch.save) every checkpoint.every_n_env_steps, and training metrics to
W&B every 1,000 env steps (offline, like the CLI's default logger; `--no-wandb` turns it off).
`benchmarks/lightning_overhead.py` runs it side by side with the CLI; it prints the loop's own time.
"""
from __future__ import annotations

import gc

gc.disable()  # imported as `python -m lightning_pg` imports (see lightning_pg/__main__.py): the same start-up
import argparse  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from lightning_pg.envs import make_vec_env  # noqa: E402
from lightning_pg.evaluation import evaluate  # noqa: E402
from lightning_pg.networks import ActorCritic  # noqa: E402
from lightning_pg.networks.numpy_actor import NumpyActor  # noqa: E402
from lightning_pg.optim import adam, contiguous  # noqa: E402
from lightning_pg.returns import gae  # noqa: E402
from lightning_pg.schedules import crossed, parse_schedule  # noqa: E402

gc.freeze()
gc.enable()

DEFAULTS = dict(num_envs=1, n_steps=2048, batch_size=64, n_epochs=10, gamma=0.99, gae_lambda=0.95, learning_rate=3e-4,
                clip_range=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5, network=[64, 64], eval_every=10_000,
                eval_episodes=10, env_kwargs=None, activation="tanh", ortho_init=True, log_std_init=0.0)


def normalized(a: torch.Tensor) -> torch.Tensor:
    return (a - a.mean()) / (a.std(unbiased=False) + 1e-8)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/ppo_cartpole.yaml")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=True,
                        help="log to W&B as the CLI does (offline unless WANDB_MODE says otherwise)")
    args = parser.parse_args()
    start_process = time.perf_counter()
    config = yaml.safe_load(open(args.config))
    hp = SimpleNamespace(**{**DEFAULTS, **config["model"]["init_args"]})
    total = args.steps or hp.total_timesteps
    ckpt_every = config.get("checkpoint", {}).get("every_n_env_steps", 10_000)
    torch.set_num_threads(config.get("torch_threads") or torch.get_num_threads())  # as the CLI does
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    envs = make_vec_env(hp.env_id, hp.env_kwargs, hp.num_envs)
    policy = ActorCritic.build(envs.single_observation_space, envs.single_action_space, hp.network, hp.activation,
                               True, hp.ortho_init, hp.log_std_init, False)
    lr, clip = parse_schedule(hp.learning_rate), parse_schedule(hp.clip_range)
    optimizer = adam(contiguous(list(policy.parameters())), lr(1.0), eps=1e-5)
    grad = optimizer.param_groups[0]["params"][0].grad_buffer
    low = high = None
    if hasattr(envs.single_action_space, "low"):
        low, high = envs.single_action_space.low, envs.single_action_space.high
    evaluator = SimpleNamespace(hparams=SimpleNamespace(env_id=hp.env_id, env_kwargs=hp.env_kwargs))

    @torch.no_grad()
    def predict(obs, deterministic=True):
        dist = policy.dist(torch.as_tensor(obs))
        return dist.mode().numpy() if low is None else np.clip(dist.mode().numpy(), low, high)

    evaluator.predict = predict
    ckpt_dir = tempfile.mkdtemp(prefix="bare_ppo_")
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    obs, _ = envs.reset(seed=seed)
    envs.action_space.seed(seed)
    steps, n, size = 0, hp.n_steps, hp.n_steps * hp.num_envs
    run = None
    if args.wandb:  # the CLI's default logger: training metrics every 1,000 env steps, evaluations, x axis env steps
        import wandb

        run = wandb.init(project="lightning_pg_bare", dir=ckpt_dir, mode=os.environ.get("WANDB_MODE", "offline"),
                         config=vars(hp))
        run.define_metric("*", step_metric="time/env_steps")
    log_clock = (0, time.perf_counter())
    start_loop = time.perf_counter()
    while steps < total:
        # ---- rollout: the policy per step (values too), one more value pass, all in numpy as lightning_pg on the CPU
        actor = NumpyActor(policy)
        xs, actions, log_probs, values = [], [], [], []
        rewards = np.zeros((n, hp.num_envs), np.float32)
        terminated = np.zeros((n, hp.num_envs), bool)
        dones = np.zeros((n, hp.num_envs), bool)
        cut_at, cut_obs = [], []
        for t in range(n):
            x, action, log_prob, value = actor.act(obs)
            xs.append(x)
            actions.append(action)
            log_probs.append(log_prob)
            values.append(value)
            env_action = action if low is None else np.clip(action, low, high)
            obs, rewards[t], terminated[t], truncated, info = envs.step(env_action)
            dones[t] = terminated[t] | truncated
            cut = np.flatnonzero(truncated & ~terminated[t])
            if len(cut):
                cut_at += [(t, i) for i in cut]
                cut_obs.append(np.stack([info["final_obs"][i] for i in cut]))
        values = np.stack(values)
        more = actor.value(np.concatenate([obs, *cut_obs]))
        next_values = np.concatenate([values[1:], more[None, : hp.num_envs]])
        if cut_at:
            ti, ei = zip(*cut_at)
            next_values[list(ti), list(ei)] = more[hp.num_envs :]
        adv, ret = gae(rewards, values, next_values, terminated, dones, hp.gamma, hp.gae_lambda)
        before, steps = steps, steps + size
        batch = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in dict(
            obs=np.concatenate(xs), actions=np.concatenate(actions), log_probs=np.concatenate(log_probs),
            advantages=adv.reshape(-1), returns=ret.reshape(-1)).items()}
        whole = {**batch, "advantages": normalized(batch["advantages"])}

        # ---- update: n_epochs x minibatches ----
        progress = max(0.0, 1.0 - steps / total)
        for group in optimizer.param_groups:
            group["lr"] = lr(progress)
        eps = clip(progress)
        for _ in range(hp.n_epochs):
            order = torch.randperm(size) if hp.batch_size < size else None
            for begin in range(0, size, hp.batch_size):
                if order is None:
                    mb = whole
                else:
                    mb = {k: v[order[begin : begin + hp.batch_size]] for k, v in batch.items()}
                    mb["advantages"] = normalized(mb["advantages"])
                a = mb["advantages"]
                grad.zero_()  # the one flat gradient of the contiguous parameters, as lightning_pg zeroes it
                dist, values = policy(mb["obs"])
                ratio = torch.exp(dist.log_prob(mb["actions"]) - mb["log_probs"])
                loss = -torch.min(ratio * a, ratio.clamp(1 - eps, 1 + eps) * a).mean()
                loss = loss + hp.vf_coef * torch.nn.functional.mse_loss(values, mb["returns"])
                if hp.ent_coef > 0:
                    loss = loss - hp.ent_coef * dist.entropy().mean()
                loss.backward()
                scale = hp.max_grad_norm / (float(torch.linalg.vector_norm(grad)) + 1e-6)  # clip_grad_norm_'s rule
                if scale < 1.0:
                    grad.mul_(scale)
                optimizer.step()

        # ---- the same logging, evaluation and checkpoint schedule as the CLI run ----
        if run is not None and (crossed(before, steps, 1_000) or steps >= total):
            with torch.no_grad():  # the last minibatch's losses and the usual PPO diagnostics
                dist, values = policy(mb["obs"])
                log_ratio = dist.log_prob(mb["actions"]) - mb["log_probs"]
                ratio = log_ratio.exp()
                metrics = {
                    "loss/policy": -torch.min(ratio * a, ratio.clamp(1 - eps, 1 + eps) * a).mean(),
                    "loss/value": hp.vf_coef * (values - mb["returns"]).square().mean(),
                    "loss/entropy": -hp.ent_coef * dist.entropy().mean(),
                    "ppo/approx_kl": ((ratio - 1) - log_ratio).mean(),
                    "ppo/clip_fraction": ((ratio - 1).abs() > eps).float().mean(),
                }
            now = time.perf_counter()
            run.log({**{k: float(v) for k, v in metrics.items()}, "ppo/learning_rate": lr(progress),
                     "ppo/clip_range": eps, "time/sps": (steps - log_clock[0]) / (now - log_clock[1]),
                     "time/env_steps": steps})
            log_clock = (steps, now)
        if hp.eval_every >= 0 and (crossed(before, steps, hp.eval_every) or steps >= total):
            mean, std = evaluate(evaluator, hp.eval_episodes, seed=1_000_000)
            if run is not None:
                run.log({"eval/return_mean": mean, "eval/return_std": std, "time/env_steps": steps})
        if crossed(before, steps, ckpt_every) or steps >= total:
            torch.save({"policy": policy.state_dict(), "optimizer": optimizer.state_dict(), "steps": steps},
                       os.path.join(ckpt_dir, "last.ckpt"))
    loop = time.perf_counter() - start_loop
    mean, std = evaluate(evaluator, 20, seed=0)
    print(f"bare PPO: {steps} env steps in {loop:.2f} s of loop ({steps / loop:.0f} env steps/s), "
          f"process so far {time.perf_counter() - start_process:.2f} s; eval {mean:.1f} ± {std:.1f}")


if __name__ == "__main__":
    main()
