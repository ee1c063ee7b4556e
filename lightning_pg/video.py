"""Episodes played on one rendering env, and their frames written to an mp4: ``python -m lightning_pg play``
and the videos of ``video_every`` during training use these.

A video holds one frame per env step: the frame rendered after each step (the reset frame is not in it), so an
episode of length T is T frames, the last one showing how it ended, and a video of several episodes has as many
frames as their lengths add up to. The frame rate is the env's ``metadata["render_fps"]`` (30 where it gives
none).
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch

from lightning_pg.envs import make_env
from lightning_pg.errors import ConfigError, EnvError

if TYPE_CHECKING:
    import gymnasium as gym

    from lightning_pg.algorithms.base import RLModule

__all__ = ["Mp4Writer", "make_render_env", "play_episode", "record_episode", "check_renders", "check_video_path"]

DEFAULT_FPS = 30


def has_display() -> bool:
    """Whether a window can be shown: always on macOS and Windows, on Linux where X11 or Wayland is reachable."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@contextlib.contextmanager
def offscreen_without_display() -> Iterator[None]:
    """Where there is no display, tell SDL (pygame, which classic-control and Box2D envs draw with) to draw
    offscreen for the while: it would otherwise probe for one and print an error ("XDG_RUNTIME_DIR is invalid"),
    to end up drawing offscreen anyway. A ``SDL_VIDEODRIVER`` the user set is left alone."""
    if has_display() or "SDL_VIDEODRIVER" in os.environ:
        yield
        return
    os.environ["SDL_VIDEODRIVER"] = "dummy"
    try:
        yield
    finally:
        os.environ.pop("SDL_VIDEODRIVER", None)


def make_render_env(model: "RLModule", render_mode: str | None = "rgb_array") -> "gym.Env":
    """One evaluation env of the model's kind (its env id, kwargs and wrappers, ``training_only`` ones left out,
    as :func:`~lightning_pg.evaluate` builds them), made with ``render_mode``: ``"rgb_array"`` (frames for a
    video), ``"human"`` (a window; gymnasium opens one for envs that only draw rgb_array frames) or None (no
    drawing).

    Wrappers leave ``render()`` to the env they wrap, so the frames are the env's own (Atari's full-colour
    screen, not the 84x84 grey observation). Raises a one-paragraph :class:`ConfigError` for an env that does
    not draw rgb_array frames.
    """
    settings = model.env_settings
    probe = make_env(settings.env_id, settings.env_kwargs, settings.env_wrappers, training=False)
    if render_mode is None:
        return probe
    modes = list((probe.metadata or {}).get("render_modes") or ())
    probe.close()
    if "rgb_array" not in modes and render_mode not in modes:
        raise ConfigError(
            f"The environment '{settings.env_id}' does not draw rgb_array frames (its metadata['render_modes'] is "
            f"{modes}), so there is nothing to show or record. Fix: use an env that draws (its class lists "
            "'rgb_array' in metadata['render_modes'] and takes a render_mode argument), or go without pictures: "
            "`play` without --video on a machine without a display prints the returns only, and video_every 0 "
            "trains without videos."
        )
    # a window for an env that only draws frames: gymnasium's HumanRendering shows them (applied here, where
    # gymnasium.make would apply it with a warning)
    by_wrapper = render_mode == "human" and "human" not in modes
    kwargs = {**(settings.env_kwargs or {}), "render_mode": "rgb_array" if by_wrapper else render_mode}
    try:
        env = make_env(settings.env_id, kwargs, settings.env_wrappers, training=False)
    except EnvError as exc:
        raise ConfigError(
            f"The environment '{settings.env_id}' lists rgb_array rendering but could not be made with "
            f"render_mode={render_mode!r}: {exc} Fix: give the env class a render_mode argument (gymnasium's "
            "convention) and keep it out of env_kwargs."
        ) from None
    if by_wrapper:
        from gymnasium.wrappers import HumanRendering

        env = HumanRendering(env)
    return env


def check_video_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path, once a file there can be written (checked now, before any episode is played); a
    one-paragraph :class:`ConfigError` otherwise."""
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ConfigError(f"The video path {path} does not end in .mp4. Fix: name an .mp4 file, e.g. --video "
                          "agent.mp4.")
    existed = path.exists()
    try:
        with open(path, "ab"):  # the folder exists and lets us write there (also as root, unlike os.access)
            pass
    except OSError as exc:
        raise ConfigError(f"The video {path} cannot be written ({exc.strerror or exc}). Fix: name a file in an "
                          "existing folder you can write to.") from None
    if not existed:
        path.unlink()
    return path


def check_frame(frame: Any) -> np.ndarray:
    """``frame`` as an array, once it is an ``[H, W, 3]`` uint8 RGB frame; a one-paragraph :class:`EnvError`
    otherwise."""
    array = np.asarray(frame)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        got = "None" if frame is None else f"an array of shape {array.shape} and dtype {array.dtype}"
        raise EnvError(
            f"The env's render() gave {got}, not an [height, width, 3] uint8 RGB frame. Fix: make render() return "
            "that frame when the env is made with render_mode='rgb_array' (gymnasium's convention), and pass "
            "render_mode on to the env it wraps, if it is a wrapper."
        )
    return array


class Mp4Writer:
    """Frames (``[H, W, 3]`` uint8, as ``env.render()`` gives them) to an H.264 mp4 through imageio's ffmpeg.

    H.264 in yuv420p (what players read) needs an even width and height: a frame of odd size gets one row or
    column repeated at its edge, and nothing is resized (imageio's ``macro_block_size`` would scale it and warn).
    Use it as a context manager; ``frames`` counts those written.
    """

    def __init__(self, path: str | os.PathLike, fps: float = DEFAULT_FPS):
        try:
            import imageio.v2 as imageio
            import imageio_ffmpeg  # noqa: F401 - the ffmpeg binary, without which imageio cannot write mp4
        except ImportError:
            raise ConfigError("Writing mp4 videos needs imageio with its ffmpeg plugin, which is not installed. Fix: "
                              "`pip install 'lightning_pg[tools]'` (or `pip install 'imageio[ffmpeg]'`).") from None
        self.path, self.fps, self.frames = Path(path), fps, 0
        # ffmpeg_log_level: only its errors reach the console (imageio passes "warning" by default)
        self._writer = imageio.get_writer(self.path, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                          pixelformat="yuv420p", macro_block_size=2, ffmpeg_log_level="error")

    def append(self, frame: Any) -> None:
        frame = check_frame(frame)
        height, width = frame.shape[:2]
        if height % 2 or width % 2:
            frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        self._writer.append_data(frame)
        self.frames += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def render_fps(env: "gym.Env") -> float:
    return float((env.metadata or {}).get("render_fps") or DEFAULT_FPS)


def play_episode(model: "RLModule", env: "gym.Env", seed: int | None, deterministic: bool = True,
                 on_frame: Callable[[np.ndarray], None] | None = None) -> tuple[float, int]:
    """One episode from ``env.reset(seed=seed)``, acting as :func:`~lightning_pg.evaluate` does
    (``model.policy_actions``: normalization frozen); its return and length. ``on_frame`` gets
    ``env.render()`` after each step (an env made with ``render_mode="rgb_array"``)."""
    import gymnasium as gym

    try:
        obs, _ = env.reset(seed=seed)
        total, length, done = 0.0, 0, False
        while not done:
            action = model.policy_actions(np.asarray(obs)[None], deterministic)[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            length += 1
            done = bool(terminated or truncated)
            if on_frame is not None:
                on_frame(env.render())
    except gym.error.DependencyNotInstalled as exc:  # envs import their drawing library (pygame) when they draw
        raise missing_drawing_package(model, exc) from None
    return total, length


def missing_drawing_package(model: "RLModule", exc: Exception, what: str = "", other_fix: str = "") -> ConfigError:
    """The one paragraph for an env whose drawing library is not installed (pygame, for classic-control and
    Box2D envs)."""
    return ConfigError(f"Rendering '{model.hparams.env_id}'{what} needs a package that is not installed: {exc} Fix: "
                       "install it (classic-control and Box2D envs draw with pygame: `pip install "
                       f"'gymnasium[classic-control]'`){other_fix}.")


def check_renders(model: "RLModule") -> None:
    """Make the model's env with ``render_mode="rgb_array"`` and draw one frame: a one-paragraph error now
    (before a fit with ``video_every``), not at its first video."""
    import gymnasium as gym

    env = make_render_env(model, "rgb_array")
    try:
        with offscreen_without_display():
            env.reset(seed=0)
            frame = env.render()
    except gym.error.DependencyNotInstalled as exc:
        raise missing_drawing_package(model, exc, " (video_every)", ", or set video_every to 0") from None
    finally:
        env.close()
    check_frame(frame)


def record_episode(model: "RLModule", path: str | os.PathLike, seed: int,
                   deterministic: bool = True) -> tuple[float, int]:
    """Play one episode from ``seed`` on a fresh rgb_array env and write it to the mp4 ``path`` (its folder is
    made); its return and length. Draws from a forked torch RNG, so a training run's random stream is left as
    it was (as :func:`~lightning_pg.evaluate` does)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    env = make_render_env(model, "rgb_array")
    try:
        with torch.random.fork_rng(devices=[]), offscreen_without_display(), Mp4Writer(path, render_fps(env)) as writer:
            return play_episode(model, env, seed, deterministic, writer.append)
    finally:
        env.close()
