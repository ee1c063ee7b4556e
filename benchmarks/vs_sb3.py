"""lightning_pg against Stable-Baselines3, side by side in one run: same hyperparameters, seeds and budget.

    pip install -e ".[bench]"            # stable-baselines3, for benchmarks only
    python benchmarks/vs_sb3.py ppo_cartpole a2c_cartpole --repeats 3 [--steps 100000]
    python benchmarks/vs_sb3.py ppo_cartpole a2c_cartpole --repeats 3 --without numpy_actor,fused_body,direct_steps
    python benchmarks/vs_sb3.py ppo_cartpole --plain                        # bare training calls on both sides
    python benchmarks/vs_sb3.py sac_pendulum --steps 5000 --repeats 3 --plain
    python benchmarks/vs_sb3.py td3_pendulum --steps 15000 --repeats 3 --plain     # also ddpg_pendulum

Each case is a config in configs/; SB3 gets the same hyperparameters, translated from the model lightning_pg
builds from that config (so defaults match too). Runs alternate (ours, SB3, ours, SB3, ...) as whole
processes, one at a time. By default both run as a user runs them: ours is the config's command line with
everything it does (evaluation every ``eval_every`` env steps, best.ckpt and last.ckpt on the config's
schedule, the default W&B logger in offline mode, the progress bar); SB3 gets an ``EvalCallback`` on the same
schedule (the same number of deterministic episodes, saving its best model) and a ``CheckpointCallback``
every ``checkpoint.every_n_env_steps``; it logs nowhere unless ``--sb3-wandb`` gives it an offline W&B run
with its rollout statistics logged every 1,000 env steps, as our CLI logs by default. ``--plain``
runs the training calls bare instead: ours without evaluation, logger or progress bar, SB3's ``learn()``
without callbacks. ``--without`` switches lightning_pg's fast paths off (``benchmarks/without.py``), to
show what each buys. For each run it prints:

- process wall time: the whole `python -m lightning_pg fit ...` or SB3 process, start to exit;
- fit time: the training call alone (Trainer.fit / model.learn), as each process reports it;
- env steps per second (budget / fit time), and the deterministic evaluation return of the final policy
  (20 episodes, one fresh env per episode seeded 0..19, the same code for both).

and at the end the median ratio lightning_pg / SB3 of both times per case. Both use one torch thread (the
configs' ``torch_threads: 1``; SB3 is given the same, since two threads per process on a busy 2-core machine
slowed every small op by up to 80x here).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
EVAL_EPISODES = 20


# ---- SB3 side ------------------------------------------------------------------------------------------
def _schedule(spec):
    if isinstance(spec, str) and spec.startswith("lin_"):
        start = float(spec[4:])
        return lambda progress_remaining: start * progress_remaining
    return float(spec)


def _policy_kwargs(hp) -> dict:
    import torch.nn as nn

    activation = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU}
    net = list(hp["network"] or [64, 64])
    sde = dict(full_std=hp["full_std"], use_expln=hp["use_expln"]) if hp.get("use_sde") else {}
    return dict(net_arch=dict(pi=net, vf=net), activation_fn=activation[hp["activation"]],
                ortho_init=hp["ortho_init"], log_std_init=hp["log_std_init"], **sde)


def _sde_kwargs(hp) -> dict:
    """gSDE: SB3's use_sde and sde_sample_freq; full_std and use_expln go in policy_kwargs."""
    if not hp.get("use_sde"):
        return {}
    return dict(use_sde=True, sde_sample_freq=hp["sde_sample_freq"])


def ppo_kwargs(hp) -> dict:
    return dict(
        n_steps=hp["n_steps"], batch_size=hp["batch_size"], n_epochs=hp["n_epochs"], gamma=hp["gamma"],
        gae_lambda=hp["gae_lambda"], learning_rate=_schedule(hp["learning_rate"]), clip_range=_schedule(hp["clip_range"]),
        clip_range_vf=None if hp["clip_range_vf"] is None else _schedule(hp["clip_range_vf"]),
        normalize_advantage=hp["normalize_advantage"], ent_coef=hp["ent_coef"], vf_coef=hp["vf_coef"],
        max_grad_norm=hp["max_grad_norm"] or 1e9, target_kl=hp["target_kl"], policy_kwargs=_policy_kwargs(hp),
        **_sde_kwargs(hp),
    )


def a2c_kwargs(hp) -> dict:
    return dict(
        n_steps=hp["n_steps"], gamma=hp["gamma"], gae_lambda=hp["gae_lambda"], learning_rate=_schedule(hp["learning_rate"]),
        ent_coef=hp["ent_coef"], vf_coef=hp["vf_coef"], max_grad_norm=hp["max_grad_norm"] or 1e9,
        use_rms_prop=hp["use_rms_prop"], rms_prop_eps=hp["rms_prop_eps"],
        normalize_advantage=hp["normalize_advantage"], policy_kwargs=_policy_kwargs(hp), **_sde_kwargs(hp),
    )


def _off_policy_kwargs(hp) -> dict:
    import torch.nn as nn

    activation = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU}
    return dict(
        learning_rate=_schedule(hp["learning_rate"]), buffer_size=hp["buffer_size"], learning_starts=hp["learning_starts"],
        batch_size=hp["batch_size"], tau=hp["tau"], gamma=hp["gamma"], train_freq=hp["train_freq"],
        gradient_steps=hp["gradient_steps"],
        policy_kwargs=dict(net_arch=list(hp["network"]), activation_fn=activation[hp["activation"]]),
    )


def _action_noise(hp):
    if hp["action_noise"] is None:
        return None
    import gymnasium as gym
    import numpy as np
    from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

    n = gym.make(hp["env_id"], **(hp["env_kwargs"] or {})).action_space.shape[0]
    noise = NormalActionNoise if hp["action_noise"] == "normal" else OrnsteinUhlenbeckActionNoise
    return noise(mean=np.zeros(n), sigma=hp["noise_std"] * np.ones(n))


def sac_kwargs(hp) -> dict:
    return dict(**_off_policy_kwargs(hp), ent_coef=hp["ent_coef"], target_entropy=hp["target_entropy"],
                target_update_interval=hp["target_update_interval"])


def ddpg_kwargs(hp) -> dict:
    return dict(**_off_policy_kwargs(hp), action_noise=_action_noise(hp))


def td3_kwargs(hp) -> dict:
    return dict(**ddpg_kwargs(hp), policy_delay=hp["policy_delay"], target_policy_noise=hp["target_policy_noise"],
                target_noise_clip=hp["target_noise_clip"])


def trpo_kwargs(hp) -> dict:
    return dict(
        n_steps=hp["n_steps"], batch_size=hp["batch_size"], gamma=hp["gamma"], gae_lambda=hp["gae_lambda"],
        learning_rate=_schedule(hp["learning_rate"]), normalize_advantage=hp["normalize_advantage"],
        target_kl=hp["target_kl"], cg_max_steps=hp["cg_max_steps"], cg_damping=hp["cg_damping"],
        line_search_shrinking_factor=hp["line_search_shrinking_factor"],
        line_search_max_iter=hp["line_search_max_iter"], n_critic_updates=hp["n_critic_updates"],
        sub_sampling_factor=hp["sub_sampling_factor"], policy_kwargs=_policy_kwargs(hp), **_sde_kwargs(hp),
    )


#: lightning_pg class name -> (SB3 class, translation of our hyperparameters into SB3's kwargs); TRPO is in
#: sb3-contrib (the bench extra installs both)
SB3_ALGOS = {"PPO": ("stable_baselines3.PPO", ppo_kwargs), "A2C": ("stable_baselines3.A2C", a2c_kwargs),
             "SAC": ("stable_baselines3.SAC", sac_kwargs), "TD3": ("stable_baselines3.TD3", td3_kwargs),
             "DDPG": ("stable_baselines3.DDPG", ddpg_kwargs), "TRPO": ("sb3_contrib.TRPO", trpo_kwargs)}


def sb3_class(name: str):
    import importlib

    module, _, cls = SB3_ALGOS[name][0].rpartition(".")
    return getattr(importlib.import_module(module), cls)


def our_hparams(config: str) -> tuple[str, dict]:
    import lightning_pg

    model_cfg = yaml.safe_load(open(REPO / config))["model"]
    name = model_cfg["class_path"].rsplit(".", 1)[1]
    model = getattr(lightning_pg, name)(**model_cfg["init_args"])
    return name, dict(model.hparams)


def sb3_worker(name: str, hparams_json: str, steps: int, seed: int, out: str, schedule_json: str,
               wandb_too: str = "") -> None:
    """Train SB3 in this process with our hyperparameters; print the fit time; save the model.

    The hyperparameters come as JSON from the driver, so this process never imports lightning_pg (its
    import time would be charged to SB3's wall time). ``schedule``: ``{"eval_every", "eval_episodes",
    "checkpoint_every"}`` in env steps for the user-run mode, or empty for a bare ``learn()``.
    """
    from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    import torch

    torch.set_num_threads(1)  # what the configs give lightning_pg for MLP policies on CPU; SB3's docs advise it
    hp, schedule = json.loads(hparams_json), json.loads(schedule_json)
    translate = SB3_ALGOS[name][1]

    def envs(n: int, env_seed: int, training: bool = True):
        vec = make_vec_env(hp["env_id"], n_envs=n, seed=env_seed, env_kwargs=hp["env_kwargs"])
        if hp.get("normalize_obs") or hp.get("normalize_reward"):
            vec = VecNormalize(vec, norm_obs=hp["normalize_obs"], norm_reward=hp["normalize_reward"] and training,
                               gamma=hp["gamma"], training=training)
        return vec

    env = envs(hp["num_envs"], seed)
    model = sb3_class(name)("MlpPolicy", env, seed=seed, device="cpu", **translate(hp))
    callbacks = []
    if schedule:  # as lightning_pg's config does it: evaluations with the best model kept, and checkpoints
        folder = os.path.dirname(out)
        if schedule["eval_every"] > 0:
            callbacks.append(EvalCallback(envs(1, seed + 1_000_000, training=False), n_eval_episodes=schedule["eval_episodes"],
                                          eval_freq=max(schedule["eval_every"] // hp["num_envs"], 1),
                                          best_model_save_path=folder, deterministic=True, verbose=0))
        callbacks.append(CheckpointCallback(max(schedule["checkpoint_every"] // hp["num_envs"], 1), folder))
        if schedule.get("snapshot_every"):  # report.py's learning curves: the weights at each evaluation
            callbacks.append(CheckpointCallback(max(schedule["snapshot_every"] // hp["num_envs"], 1),
                                                os.path.join(folder, "snapshots"), name_prefix="snap",
                                                save_vecnormalize=True))
    if wandb_too:  # an offline W&B run that gets SB3's rollout statistics every 1,000 env steps
        import wandb
        from stable_baselines3.common.callbacks import BaseCallback

        run = wandb.init(project="sb3", dir=os.path.dirname(out), mode="offline", config=hp)

        class LogToWandb(BaseCallback):
            def _on_step(self) -> bool:
                if self.num_timesteps // 1000 != (self.num_timesteps - hp["num_envs"]) // 1000:
                    stats = {k: v for k, v in self.model.logger.name_to_value.items()}
                    infos = self.model.ep_info_buffer
                    if infos:
                        stats["train/episode_return"] = sum(i["r"] for i in infos) / len(infos)
                    run.log({**stats, "time/env_steps": self.num_timesteps})
                return True

        callbacks.append(LogToWandb())
    start = time.perf_counter()
    model.learn(steps, callback=callbacks)
    print(f"FIT_SECONDS {time.perf_counter() - start:.4f}", flush=True)
    if wandb_too:
        run.finish()
    model.save(out)
    if isinstance(env, VecNormalize):
        env.save(out + ".vecnormalize.pkl")


# ---- shared evaluation -----------------------------------------------------------------------------------
def evaluate_predict(predict, env_id: str, env_kwargs: dict | None, episodes: int = EVAL_EPISODES) -> float:
    import gymnasium as gym
    import numpy as np

    returns = []
    for i in range(episodes):
        env = gym.make(env_id, **(env_kwargs or {}))
        obs, _ = env.reset(seed=i)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(predict(np.asarray(obs)))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        env.close()
    return float(np.mean(returns))


def _vecnormalize_file(path: str) -> str | None:
    """SB3's VecNormalize statistics saved beside a model: ``model.vecnormalize.pkl`` beside ``model.zip`` (the
    worker's end), ``snap_vecnormalize_N_steps.pkl`` beside ``snap_N_steps.zip`` (CheckpointCallback's)."""
    stem = path.removesuffix(".zip")
    folder, name = os.path.split(stem)
    prefix, _, steps = name.partition("_")
    for candidate in (stem + ".vecnormalize.pkl", os.path.join(folder, f"{prefix}_vecnormalize_{steps}.pkl")):
        if os.path.exists(candidate):
            return candidate
    return None


def eval_worker(kind: str, config: str, paths: list[str], episodes: int = EVAL_EPISODES) -> None:
    """Evaluate each saved model (ours: a checkpoint, SB3: a zip) with the one loop, ``evaluate_predict``; print
    ``EVAL_RETURN <its env steps> <mean return>`` per file."""
    name, hp = our_hparams(config)
    for path in paths:
        if kind == "ours":
            import lightning_pg

            model = getattr(lightning_pg, name).load_from_checkpoint(path)
            predict = lambda obs: model.predict(obs, deterministic=True)  # noqa: E731
        else:
            model = sb3_class(name).load(path, device="cpu")
            norm, norm_file = None, _vecnormalize_file(path)
            if norm_file:
                import pickle

                norm = pickle.load(open(norm_file, "rb"))
            predict = lambda obs: model.predict(norm.normalize_obs(obs) if norm else obs, deterministic=True)[0]  # noqa: E731
        mean = evaluate_predict(predict, hp["env_id"], hp["env_kwargs"], episodes)
        print(f"EVAL_RETURN {model.num_timesteps} {mean:.3f}", flush=True)


# ---- driver ---------------------------------------------------------------------------------------------
def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return wall, result.stdout + result.stderr


def ours_command(config: str, budget: int, seed: int, root: str, plain: bool = False, without: str = "",
                 ours_args: list[str] = ()) -> list[str]:
    """Our side: the config's command line into a fresh root (its first run folder is ``root/run_1``)."""
    launcher = [str(REPO / "benchmarks" / "without.py"), without] if without else ["-m", "lightning_pg"]
    cmd = [sys.executable, *launcher, "fit", "--config", config, "--seed_everything", str(seed),
           f"--model.total_timesteps={budget}", "--trainer.default_root_dir", root, *ours_args]
    if plain:
        cmd += ["--model.eval_every=-1", "--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    return cmd


def sb3_command(config: str, budget: int, seed: int, out: str, plain: bool = False, sb3_wandb: bool = False,
                snapshot_every: int = 0) -> list[str]:
    """SB3's side: this file's worker with our hyperparameters, saving ``out.zip``. ``snapshot_every`` > 0: SB3
    evaluates on that schedule (instead of the config's ``eval_every``) and keeps its weights at each one
    under ``snapshots/``, as ``--model.eval_every`` and report.py's callback do on our side."""
    name, hparams = our_hparams(config)
    spec = yaml.safe_load(open(REPO / config))
    schedule = {} if plain else {
        "eval_every": snapshot_every or hparams["eval_every"], "eval_episodes": hparams["eval_episodes"],
        "checkpoint_every": spec.get("checkpoint", {}).get("every_n_env_steps", 10_000),
        "snapshot_every": snapshot_every}
    return [sys.executable, __file__, "--sb3-worker", name, json.dumps(hparams), str(budget), str(seed), out,
            json.dumps(schedule), "wandb" if sb3_wandb and not plain else ""]


def train(kind: str, cmd: list[str], env: dict) -> tuple[float, float]:
    """Run one side's training process: (process wall time, fit time it reports)."""
    wall, out = timed(cmd, env)
    fit = re.search(r"in ([\d.]+) s of fit", out) if kind == "ours" else re.search(r"FIT_SECONDS ([\d.]+)", out)
    return wall, float(fit.group(1))


def evaluate_saved(kind: str, config: str, paths: list[str], env: dict,
                   episodes: int = EVAL_EPISODES) -> list[tuple[int, float]]:
    """(env steps, mean return) of each saved model, by the one evaluation loop, in a process of its own."""
    _, out = timed([sys.executable, __file__, "--eval-worker", kind, config, str(episodes), *paths], env)
    return [(int(steps), float(ret)) for steps, ret in re.findall(r"EVAL_RETURN (\d+) (-?[\d.]+)", out)]


def run_case(case: str, steps: int | None, seed: int, workdir: str, env: dict, plain: bool, without: str = "",
             ours_args: list[str] = (), sb3_wandb: bool = False) -> dict:
    config = f"configs/{case}.yaml"
    spec = yaml.safe_load(open(REPO / config))
    budget = steps or spec["model"]["init_args"]["total_timesteps"]
    ours_root = tempfile.mkdtemp(prefix=f"{case}_ours_", dir=workdir)
    sb3_out = os.path.join(tempfile.mkdtemp(prefix=f"{case}_sb3_", dir=workdir), "model")
    sides = {"ours": (ours_command(config, budget, seed, ours_root, plain, without, ours_args),
                      os.path.join(ours_root, "run_1", "checkpoints", "last.ckpt")),  # a fresh root: its first run
             "sb3": (sb3_command(config, budget, seed, sb3_out, plain, sb3_wandb), sb3_out + ".zip")}
    row = {}
    for kind, (cmd, path) in sides.items():
        wall, fit = train(kind, cmd, env)
        [(_, final)] = evaluate_saved(kind, config, [path], env)
        row[kind] = {"wall": wall, "fit": fit, "sps": budget / fit, "eval": final}
    return row


def main() -> None:
    if sys.argv[1:2] == ["--sb3-worker"]:
        return sb3_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7],
                          sys.argv[8])
    if sys.argv[1:2] == ["--eval-worker"]:
        return eval_worker(sys.argv[2], sys.argv[3], sys.argv[5:], int(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="+", help="config names, e.g. ppo_cartpole a2c_cartpole")
    parser.add_argument("--steps", type=int, default=None, help="env-step budget (default: the config's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plain", action="store_true",
                        help="bare training calls: ours without evaluation, logger or progress bar; SB3 without callbacks")
    parser.add_argument("--sb3-wandb", action="store_true",
                        help="SB3 logs to an offline W&B run too, as our CLI does by default (not with --plain)")
    parser.add_argument("--without", default="", help="lightning_pg fast paths to switch off (see benchmarks/without.py)")
    parser.add_argument("--ours-args", default="",
                        help="extra CLI args for our runs, e.g. --ours-args='--model.matmul_precision=highest'")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("WANDB_MODE", None)  # the CLI's own default: offline
    workdir = tempfile.mkdtemp(prefix="vs_sb3_")
    print(f"mode: {'plain training calls' if args.plain else 'as a user runs it'}"
          f"{'; SB3 with W&B too' if args.sb3_wandb and not args.plain else ''}"
          f"{'; lightning_pg without ' + args.without if args.without else ''}", flush=True)
    print(f"{'case':16s} {'run':>3s} | {'ours wall':>9s} {'sb3 wall':>9s} {'ratio':>6s} | {'ours fit':>8s} {'sb3 fit':>8s} "
          f"{'ratio':>6s} | {'ours sps':>8s} {'sb3 sps':>8s} | {'ours eval':>9s} {'sb3 eval':>9s}", flush=True)
    summary = {}
    for case in args.cases:
        ratios = {"wall": [], "fit": []}
        for run in range(args.repeats):
            r = run_case(case, args.steps, args.seed + run, workdir, env, args.plain, args.without,
                         shlex.split(args.ours_args), args.sb3_wandb)
            o, s = r["ours"], r["sb3"]
            ratios["wall"].append(o["wall"] / s["wall"])
            ratios["fit"].append(o["fit"] / s["fit"])
            print(f"{case:16s} {run:>3d} | {o['wall']:9.2f} {s['wall']:9.2f} {ratios['wall'][-1]:6.2f} | "
                  f"{o['fit']:8.2f} {s['fit']:8.2f} {ratios['fit'][-1]:6.2f} | {o['sps']:8.0f} {s['sps']:8.0f} | "
                  f"{o['eval']:9.1f} {s['eval']:9.1f}", flush=True)
        summary[case] = {k: statistics.median(v) for k, v in ratios.items()}
    print()
    for case, med in summary.items():
        print(f"{case}: median ratio lightning_pg/SB3: process wall {med['wall']:.2f}, fit {med['fit']:.2f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
