"""One observation at a time: the exported ONNX policy in onnxruntime, the TorchScript one, and ``model.predict``.

    python benchmarks/onnx_speed.py [--ckpt_path X] [--steps 100000] [--calls 10000] [--repeats 5]

Without ``--ckpt_path`` it trains configs/ppo_cartpole.yaml through the CLI first (``--steps`` env steps, no
evaluation or logger, in a temporary folder). It exports the checkpoint with ``python -m lightning_pg export``
to ONNX and TorchScript, collects ``--calls`` observations from the env (random actions), and answers each one
on its own, as a served policy does: ``model.predict(obs)``; ``session.run`` of onnxruntime (CPU, one intra-op
thread) on ``obs[None]``; the TorchScript module on ``torch.from_numpy(obs[None])``. The three take turns for
``--repeats`` rounds; it prints the median microseconds per call and the ratios, and checks that the three give
the same actions.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

REPO = Path(__file__).resolve().parents[1]


def lightning_pg(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "lightning_pg", *args], cwd=REPO, check=True)


def train(root: Path, steps: int) -> Path:
    lightning_pg("fit", "--config", "configs/ppo_cartpole.yaml", "--seed_everything", "0", "--trainer.logger=false",
                 "--trainer.enable_progress_bar=false", "--model.eval_every=-1", f"--model.total_timesteps={steps}",
                 "--trainer.default_root_dir", str(root))
    return next(root.glob("run_*/checkpoints/last.ckpt"))


def observations(model, count: int) -> np.ndarray:
    from lightning_pg.envs import make_env

    env = make_env(model.hparams.env_id, model.hparams.env_kwargs, model.hparams.env_wrappers, training=False)
    env.action_space.seed(0)
    obs, seen = env.reset(seed=0)[0], []
    while len(seen) < count:
        seen.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs = env.reset()[0]
    env.close()
    return np.stack(seen)


def per_call(answer, obs: np.ndarray) -> tuple[float, np.ndarray]:
    """Microseconds per call of ``answer`` on each observation in turn, and the actions."""
    actions = []
    start = time.perf_counter()
    for one in obs:
        actions.append(answer(one))
    return (time.perf_counter() - start) / len(obs) * 1e6, np.asarray(actions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt_path", help="a ppo_cartpole checkpoint (default: train one)")
    parser.add_argument("--steps", type=int, default=100_000, help="env steps of the training (without --ckpt_path)")
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the config's torch_threads: a served policy of this size runs single-threaded

    from lightning_pg.commands import load_agent

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        ckpt = Path(args.ckpt_path) if args.ckpt_path else train(folder / "runs", args.steps)
        for fmt, name in (("onnx", "policy.onnx"), ("torchscript", "policy.pt")):
            lightning_pg("export", "--ckpt_path", str(ckpt), "--format", fmt, "--output", str(folder / name))
        model = load_agent(str(ckpt))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # one observation: a thread pool only adds hand-offs
        session = onnxruntime.InferenceSession(str(folder / "policy.onnx"), options,
                                               providers=["CPUExecutionProvider"])
        scripted = torch.jit.load(str(folder / "policy.pt"))
    obs = observations(model, args.calls)

    @torch.no_grad()
    def torchscript(one):
        return scripted(torch.from_numpy(one[None])).numpy()[0]

    answers = {
        "model.predict": lambda one: model.predict(one, deterministic=True),
        "onnxruntime": lambda one: session.run(None, {"obs": one[None]})[0][0],
        "TorchScript": torchscript,
    }
    times: dict[str, list[float]] = {name: [] for name in answers}
    actions: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for name, answer in answers.items():
            seconds, actions[name] = per_call(answer, obs)
            times[name].append(seconds)
    print(f"{model.hparams.env_id} {type(model).__name__} policy ({model.num_timesteps} env steps), {args.calls} "
          f"single observations, median of {args.repeats} rounds, torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}:")
    base = statistics.median(times["model.predict"])
    for name, runs in times.items():
        differ = int((actions[name] != actions["model.predict"]).sum())
        print(f"  {name:14s} {statistics.median(runs):8.1f} us/call   {base / statistics.median(runs):5.1f}x "
              f"model.predict's speed   actions differing from predict's: {differ}")


if __name__ == "__main__":
    main()
