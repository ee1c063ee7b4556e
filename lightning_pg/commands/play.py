"""``python -m lightning_pg play --ckpt_path X``: watch a checkpoint's agent, config-free.

The model, its env id, wrappers and normalization statistics come from the checkpoint; the env is an evaluation
env (``training_only`` wrappers left out, as ``validate`` plays). Episode ``i`` starts from ``env.reset(seed=S + i)``,
as :func:`lightning_pg.evaluate`'s env ``i`` does, so ``play --seed S --episodes N`` plays the episodes
``evaluate(model, N, seed=S)`` averages (N <= 16), and two plays with the same seed print the same returns.

Where the episodes go:

- ``--video FILE.mp4``: the env's rgb_array frames, one per step (:mod:`lightning_pg.video`);
- else, with a display (``DISPLAY`` or ``WAYLAND_DISPLAY`` set): a window (``render_mode="human"``);
- else nowhere: the returns are printed, with a line saying how to get a video. (RL Zoo's ``enjoy`` does not
  write files unasked either; a headless job that plays to check returns gets no stray mp4.)
"""
from __future__ import annotations

import numpy as np
import torch

from lightning_pg.commands import CommandParser, add_imports_option, load_agent
from lightning_pg.errors import ConfigError


def parse_bool(text: str) -> bool:
    value = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text.lower())
    if value is None:
        raise ValueError(text)
    return value


parse_bool.__name__ = "true|false"  # what argparse names in its message for a bad value


def parser() -> CommandParser:
    parser = CommandParser("play", "Play a checkpoint's agent: each episode's return and length, shown in a window "
                                   "or written to an mp4.")
    parser.add_argument("--ckpt_path", required=True, help="a lightning_pg checkpoint (a run's last.ckpt or best.ckpt)")
    parser.add_argument("--episodes", type=int, default=1, help="episodes to play (default 1)")
    parser.add_argument("--deterministic", type=parse_bool, default=True, metavar="true|false",
                        help="the policy's most likely action (true, the default, as evaluation) or a sampled one")
    parser.add_argument("--video", metavar="FILE.mp4", help="write the episodes to this mp4 (one frame per step) "
                                                             "instead of showing them")
    parser.add_argument("--seed", type=int, default=0,
                        help="episode i starts from env.reset(seed=SEED + i), as evaluation's env i (default 0)")
    add_imports_option(parser)
    return parser


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.seed < 0:
        raise ConfigError(f"--seed {args.seed}: env seeds are integers >= 0. Fix: pass --seed 0 or more.")
    if args.episodes < 1:
        raise ConfigError(f"--episodes {args.episodes}: play needs at least one episode. Fix: pass --episodes 1 or "
                          "more.")
    from lightning_pg import video as videos

    path = videos.check_video_path(args.video) if args.video else None  # before the checkpoint loads: fail fast
    model = load_agent(args.ckpt_path, args.imports)
    window = path is None and videos.has_display()
    env = videos.make_render_env(model, "rgb_array" if path else "human" if window else None)
    writer = videos.Mp4Writer(path, videos.render_fps(env)) if path else None
    returns, lengths = [], []
    try:
        with torch.random.fork_rng(devices=[]), videos.offscreen_without_display():
            torch.manual_seed(args.seed)  # stochastic play repeats too
            reset_noise = getattr(getattr(model, "policy", None), "reset_noise", None)
            if reset_noise is not None:  # gSDE's exploration matrix: drawn at load, from an unseeded stream
                reset_noise(1)
            for episode in range(args.episodes):
                episode_return, length = videos.play_episode(model, env, args.seed + episode, args.deterministic,
                                                             writer.append if writer else None)
                returns.append(episode_return)
                lengths.append(length)
                print(f"episode {episode + 1}: return {episode_return:.2f}, length {length}", flush=True)
    finally:  # (a Ctrl+C leaves a playable mp4 of the steps so far)
        env.close()
        if writer is not None:
            writer.close()
    how = "deterministic" if args.deterministic else "stochastic"
    episodes = f"{args.episodes} {how} episode{'s' if args.episodes > 1 else ''}"
    summary = (f"{type(model).__name__} on {model.hparams.env_id}: {episodes} from seed "
               f"{args.seed}, return {np.mean(returns):.2f} ± {np.std(returns):.2f}, length {np.mean(lengths):.1f}")
    if writer is not None:
        summary += f"; video {path} ({writer.frames} frames, {writer.fps:g} fps)"
    elif not window:
        summary += "; no display, so nothing shown (--video FILE.mp4 records the episodes)"
    print(summary, flush=True)
    return 0
