"""``python -m lightning_pg play`` and ``video_every``: checkpoints trained through the CLI in a subprocess, played
by the CLI in another; each mp4 decoded back and its frames counted against the printed episode lengths (one
frame per step); the W&B offline run's video files and history; the one-paragraph errors."""
import glob
import hashlib
import re
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from lightning_pg.commands import load_agent, play
from lightning_pg.errors import ConfigError
from lightning_pg.evaluation import episode_returns
from tests.helpers import REPO, cli_env, run_cli, run_folder, wandb_records, wandb_summary

#: name -> (config, options, what `play` needs to load it): short fits (an early CartPole policy drops the pole
#: within a few dozen steps; Pendulum's episodes are 200 steps; the pixel env's 20, seen through a CNN)
RUNS = {
    "cartpole": ("configs/ppo_cartpole.yaml", ["--model.total_timesteps=2048"], []),
    "pendulum": ("configs/ppo_pendulum.yaml", ["--model.total_timesteps=4096"], []),
    "gsde": ("configs/ppo_pendulum_gsde.yaml", ["--model.total_timesteps=4096"], []),
    "pixels": ("configs/ppo_cartpole.yaml",
               ["--model.total_timesteps=512", "--model.env_id=tests.envs:RenderedPixelDot"],
               ["--import", "tests.envs"]),
}
EPISODE = re.compile(r"^episode (\d+): return (-?[\d.]+), length (\d+)$", re.M)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """``checkpoint(name)``: the last.ckpt of a run of RUNS[name], trained once per module (on first use)."""
    trained = {}

    def get(name):
        if name not in trained:
            config, options, _ = RUNS[name]
            root = tmp_path_factory.mktemp(name)
            result = run_cli(*options, "--model.eval_every=-1", config=config, root=root)
            assert result.returncode == 0, result.stderr[-2000:]
            trained[name] = run_folder(root) / "checkpoints" / "last.ckpt"
        return trained[name]

    return get


def run_play(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "lightning_pg", "play", *map(str, args)], cwd=REPO,
                          env=cli_env(DISPLAY="", WAYLAND_DISPLAY=""), capture_output=True, text=True, timeout=timeout)


def mp4_frames(path):
    frames = np.stack(list(iio.imiter(path, plugin="FFMPEG")))
    return frames, iio.immeta(path, plugin="FFMPEG")["fps"]


@pytest.mark.parametrize("name, episodes, size, fps", [
    ("cartpole", 3, (400, 600), 50),  # CartPole draws 600x400 at 50 fps, Pendulum 500x500 at 30
    ("pendulum", 1, (500, 500), 30),
    ("pixels", 2, (108, 108), 10),  # RenderedPixelDot draws 107x107: padded to even sizes for H.264
])
def test_play_writes_one_frame_per_step(checkpoint, tmp_path, name, episodes, size, fps):
    video = tmp_path / "agent.mp4"
    result = run_play("--ckpt_path", checkpoint(name), "--episodes", episodes, "--video", video, "--seed", 7,
                      *RUNS[name][2])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # nothing from imageio, ffmpeg or SDL on the console
    printed = EPISODE.findall(result.stdout)
    assert [int(i) for i, _, _ in printed] == list(range(1, episodes + 1))
    lengths = [int(length) for _, _, length in printed]
    frames, video_fps = mp4_frames(video)
    assert len(frames) == sum(lengths)  # one frame per step, the reset frames not among them
    assert frames.shape[1:] == (*size, 3) and video_fps == fps
    assert frames.std() > 0 and not (frames[0] == frames[-1]).all()  # the env's pictures, and they move
    assert f"video {video} ({sum(lengths)} frames, {fps} fps)" in result.stdout.splitlines()[-1]

    # the episodes are evaluation's: env i of evaluate(seed=7) plays episode i
    model = load_agent(str(checkpoint(name)), ["tests.envs"] if name == "pixels" else [])
    returns = [float(r) for _, r, _ in printed]
    np.testing.assert_allclose(sorted(returns), sorted(episode_returns(model, episodes, seed=7)), atol=0.006)


def test_play_repeats_with_a_seed_and_prints_the_returns_without_a_display(checkpoint, capsys, monkeypatch):
    ckpt = checkpoint("cartpole")
    result = run_play("--ckpt_path", ckpt, "--episodes", 3, "--deterministic", "false", "--seed", 3)
    assert result.returncode == 0, result.stderr
    assert len(EPISODE.findall(result.stdout)) == 3
    last = result.stdout.splitlines()[-1]
    assert last.startswith("PPO on CartPole-v1: 3 stochastic episodes from seed 3, return ")
    assert "no display, so nothing shown (--video FILE.mp4 records the episodes)" in last
    assert not list(REPO.glob("*.mp4"))  # no video unless asked

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    printed = []
    for seed in 3, 4:  # here, in this process: the same seed, the same episodes (stochastic actions and resets)
        args = ["--ckpt_path", str(ckpt), "--episodes", "3", "--deterministic", "false", "--seed", str(seed)]
        assert play.main(args) == 0
        printed.append(capsys.readouterr().out)
    assert printed[0] == result.stdout
    assert EPISODE.findall(printed[1]) != EPISODE.findall(printed[0])

    monkeypatch.setenv("DISPLAY", ":0")  # a display, and no --video: a window (SDL's dummy driver draws it nowhere)
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    assert play.main(["--ckpt_path", str(ckpt), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("PPO on CartPole-v1: 1 deterministic episode from seed 3, return ")
    assert "no display" not in out and "video" not in out


def test_stochastic_play_of_a_gsde_policy_repeats_with_its_seed(checkpoint, capsys):
    """gSDE's exploration matrix is drawn when the model is built: play redraws it from its seed."""
    printed = []
    for _ in range(2):  # each load draws the matrix from wherever the process's stream stands
        assert play.main(["--ckpt_path", str(checkpoint("gsde")), "--deterministic", "false", "--seed", "3"]) == 0
        printed.append(EPISODE.findall(capsys.readouterr().out))
    assert printed[0] == printed[1] and len(printed[0]) == 1


def test_play_bad_input_is_one_paragraph(checkpoint, tmp_path):
    ckpt = checkpoint("cartpole")
    result = run_play("--ckpt_path", ckpt, "--episodes", 0)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("lightning_pg: error: --episodes 0: play needs at least one episode. Fix: pass "
                             "--episodes 1 or more.\n")

    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(ckpt.read_bytes()[:5000])
    a_file = tmp_path / "file.txt"
    a_file.write_text("")
    bad = {
        "missing": (["--ckpt_path", tmp_path / "nothing.ckpt"], "The checkpoint .*nothing.ckpt does not exist"),
        "damaged": (["--ckpt_path", damaged], "cannot be read: it is damaged"),
        "folder is a file": (["--ckpt_path", ckpt, "--video", a_file / "x.mp4"], "The video .*x.mp4 cannot be written"),
        "not mp4": (["--ckpt_path", ckpt, "--video", tmp_path / "x.avi"], r"does not end in \.mp4"),
        "not a bool": (["--ckpt_path", ckpt, "--deterministic", "maybe"], "invalid true|false value: 'maybe'"),
        "negative seed": (["--ckpt_path", ckpt, "--seed", "-1"], r"--seed -1: env seeds are integers >= 0"),
    }
    for what, (args, message) in bad.items():
        with pytest.raises(ConfigError, match=message):
            play.main([str(a) for a in args])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.ckpt", "file.txt"]  # no video file left behind


def test_an_env_that_does_not_draw_is_refused_by_play_and_by_video_every():
    import lightning_pg as lp
    from lightning_pg.video import make_render_env

    with pytest.raises(ConfigError, match=r"'tests.envs:Counter' does not draw rgb_array frames \(its "
                                          r"metadata\['render_modes'\] is \[\]\)"):
        make_render_env(lp.PPO(env_id="tests.envs:Counter", n_steps=8, batch_size=8), "rgb_array")
    model = lp.PPO(env_id="tests.envs:Counter", n_steps=8, batch_size=8, total_timesteps=64, video_every=16)
    trainer = lp_trainer()
    with pytest.raises(ConfigError, match="does not draw rgb_array frames"):
        trainer.fit(model)
    assert model.num_timesteps == 0  # refused at the start, not at the first video
    with pytest.raises(ConfigError, match="Invalid hyperparameter video_every=-5"):
        lp.PPO(env_id="CartPole-v1", video_every=-5)


def lp_trainer():
    import pytorch_lightning as pl

    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=1,
                      enable_model_summary=False)


def test_video_every_writes_videos_logs_them_to_offline_wandb_and_leaves_training_as_it_was(tmp_path):
    common = ["--model.total_timesteps=2048", "--model.eval_every=-1", "--seed_everything=3"]
    env = cli_env()
    env.pop("WANDB_MODE", None)  # the CLI's default logger: an offline W&B run
    with_video = run_cli(*common, "--model.video_every=1024", config="configs/ppo_cartpole.yaml",
                         root=tmp_path / "video", logger=None, env=env)
    assert with_video.returncode == 0, with_video.stderr[-2000:]
    without = run_cli(*common, config="configs/ppo_cartpole.yaml", root=tmp_path / "plain")
    assert without.returncode == 0, without.stderr[-2000:]
    assert "XDG_RUNTIME_DIR" not in with_video.stderr

    run = run_folder(tmp_path / "video")
    # a run with videos trains as one without: the same final weights (recording draws from a forked RNG)
    weights = [torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
               for r in (run, run_folder(tmp_path / "plain"))]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key

    videos = sorted(run.glob("videos/*.mp4"))
    assert [v.name for v in videos] == ["step_1024.mp4", "step_2048.mp4"]
    # the last one is the final policy's deterministic episode from evaluation's first start state
    from lightning_pg.algorithms.base import EVAL_SEED
    from lightning_pg.video import make_render_env, play_episode

    model = load_agent(str(run / "checkpoints" / "last.ckpt"))
    env = make_render_env(model, None)
    _, length = play_episode(model, env, EVAL_SEED)
    env.close()
    assert len(mp4_frames(videos[-1])[0]) == length

    (wandb_run,) = glob.glob(f"{run}/wandb/offline-run-*")
    (run_file,) = glob.glob(f"{wandb_run}/run-*.wandb")
    history, _ = wandb_records(run_file)
    logged = [row for row in history if "eval/video/_type" in row]
    assert [row["time/env_steps"] for row in logged] == [1024, 2048]
    for row, video in zip(logged, videos):
        assert row["eval/video/_type"] == "video-file"
        copy = f"{wandb_run}/files/{row['eval/video/path']}"  # files/media/videos/eval/video_*.mp4
        assert copy.startswith(f"{wandb_run}/files/media/videos/")
        assert hashlib.sha256(open(copy, "rb").read()).hexdigest() == row["eval/video/sha256"] == \
            hashlib.sha256(video.read_bytes()).hexdigest()
    summary = wandb_summary(run_file)  # the run's summary names the last video
    assert summary["eval/video/_type"] == "video-file"
    assert summary["eval/video/sha256"] == logged[-1]["eval/video/sha256"]
