"""Every failure is one paragraph and exit status 2, written before anything else is (config.yaml included),
and the last checkpoint that stands stays loadable; stops meet their deadline; one run per folder."""
import contextlib
import errno
import io
import shutil
import signal
import subprocess
import time

import pytest
import pytorch_lightning as pl
import torch

import lightning_pg as lp
from lightning_pg.callbacks import RLCheckpoint
from lightning_pg.callbacks.checkpoint import CheckpointWriteError
from tests.helpers import REPO, ckpt_state, cli_args, cli_env, run_cli, run_folder

PPO = "configs/ppo_cartpole.yaml"
SHORT = ["--model.total_timesteps=2048", "--model.eval_every=1024"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished PPO CartPole run (2,048 env steps, best.ckpt and last.ckpt)."""
    root = tmp_path_factory.mktemp("trained")
    result = run_cli(*SHORT, config=PPO, root=root)
    assert result.returncode == 0, result.stderr[-2000:]
    return root


@contextlib.contextmanager
def tmpfs(path, size):
    """A small RAM filesystem at ``path``: a disk that fills up for real."""
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def one_paragraph(result, message, status=2):
    """The run failed with exactly one `lightning_pg: error:` line holding ``message`` and a Fix, no traceback."""
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("lightning_pg: error:")]
    assert len(errors) == 1 and message in errors[0] and "Fix:" in errors[0], result.stderr[-3000:]
    return errors[0]


def _copy_run(trained, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(trained, root)
    (run_folder(root) / "config.yaml").write_text("# the run's own config\n")
    return root


def _damaged(kind, trained, tmp_path):
    path = tmp_path / f"{kind}.ckpt"
    good = (run_folder(trained) / "checkpoints" / "last.ckpt").read_bytes()
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "random":
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "bare torch.save":
        torch.save({"weights": torch.zeros(3)}, path)
    return path


DAMAGED = {"truncated": "cannot be read", "random": "cannot be read", "empty": "cannot be read",
           "bare torch.save": "was not written by lightning_pg"}


@pytest.mark.parametrize("subcommand", ["fit", "validate"])
@pytest.mark.parametrize("kind", list(DAMAGED))
def test_damaged_checkpoint_is_refused_before_anything_is_written(trained, tmp_path, kind, subcommand):
    root = _copy_run(trained, tmp_path)
    path = _damaged(kind, trained, tmp_path)
    run = run_folder(root)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    result = run_cli(*SHORT, f"--ckpt_path={path}", config=PPO, root=root, logger="true", subcommand=subcommand)
    one_paragraph(result, DAMAGED[kind])
    assert (run / "config.yaml").read_text() == "# the run's own config\n"  # not rewritten
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before  # nothing written: no new run
    assert [p.name for p in root.iterdir()] == [run.name]  # folder, W&B run or checkpoint


def test_checkpoint_of_other_network_sizes(trained, tmp_path):
    root = _copy_run(trained, tmp_path)
    result = run_cli("--model.total_timesteps=4096", "--model.network=[32,32]", "--ckpt_path=last", config=PPO,
                     root=root)
    line = one_paragraph(result, "holds networks of other sizes than the config builds")
    assert "the checkpoint's network is [64, 64], the config's [32, 32]" in line


def test_ckpt_path_best(trained, tmp_path):
    result = run_cli("--ckpt_path=best", config=PPO, root=trained, subcommand="validate")
    assert result.returncode == 0 and "eval/return_mean" in result.stdout, result.stderr[-2000:]
    one_paragraph(run_cli("--ckpt_path=best", config=PPO, root=tmp_path, subcommand="validate"),
                  "--ckpt_path best: no run under")


def test_ckpt_path_last_with_nothing_to_resume_starts_a_new_run_and_says_so(tmp_path):
    result = run_cli("--model.total_timesteps=512", "--model.eval_every=-1", "--ckpt_path=last", config=PPO,
                     root=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"no last.ckpt under {tmp_path} to resume: starting a new run." in result.stderr
    assert ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")["lightning_pg"]["num_timesteps"] == 512


def test_budget_already_reached_is_refused_and_leaves_last_ckpt_alone(trained, tmp_path):
    root = _copy_run(trained, tmp_path)
    before = (run_folder(root) / "checkpoints" / "last.ckpt").read_bytes()
    for budget in (1024, 2048):  # below, and equal to, the 2,048 env steps done
        one_paragraph(run_cli(f"--model.total_timesteps={budget}", "--ckpt_path=last", config=PPO, root=root),
                      "has already taken 2048 env steps")
    assert (run_folder(root) / "checkpoints" / "last.ckpt").read_bytes() == before


SETTINGS = {
    "default_root_dir names a file": (lambda tmp: ["--trainer.default_root_dir", tmp / "a_file"],
                                      "is a file"),
    "malformed YAML": (lambda tmp: ["--config", tmp / "bad.yaml"], "bad.yaml is not valid YAML"),
    "a 100,000 x 100,000 network": (lambda tmp: ["--model.network=[100000,100000]"], "more than the"),
    "checkpoint interval 0": (lambda tmp: ["--checkpoint.every_n_env_steps=0"], "every_n_env_steps=0"),
    "checkpoint interval negative": (lambda tmp: ["--checkpoint.every_n_env_steps=-5"], "every_n_env_steps=-5"),
    "stop grace 0": (lambda tmp: ["--checkpoint.stop_grace_s=0"], "stop_grace_s=0"),
    "num_envs 5000 against the budget": (lambda tmp: ["--model.num_envs=5000", "--model.batch_size=64"],
                                         "overshoot its budget"),
    "replay buffer of 1e9 rows": (lambda tmp: ["--config", REPO / "configs/sac_pendulum.yaml",
                                               "--model.buffer_size=1000000000"], "the replay buffer"),
}


@pytest.mark.parametrize("case", list(SETTINGS))
def test_settings_are_checked_at_start(tmp_path, case):
    (tmp_path / "a_file").write_text("")
    (tmp_path / "bad.yaml").write_text("model:\n  init_args: [unclosed\n")
    make_args, message = SETTINGS[case]
    args = [str(a) for a in make_args(tmp_path)]
    root = tmp_path / "run"
    cmd = cli_args(config=PPO, root=root) + args  # a later --config or root wins
    result = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120)
    one_paragraph(result, message)
    assert not root.exists()


def test_full_disk_leaves_the_previous_checkpoint_and_no_partial_file(trained, tmp_path):
    with tmpfs(tmp_path / "disk", "400k") as disk:  # room for last.ckpt and best.ckpt (148 kB each), no more
        shutil.copy(run_folder(trained) / "checkpoints" / "last.ckpt", disk / "last.ckpt")
        result = run_cli("--model.total_timesteps=100000", "--model.eval_every=1024",
                         "--checkpoint.every_n_env_steps=1024", f"--checkpoint.dirpath={disk}", "--ckpt_path=last",
                         config=PPO, root=tmp_path / "run")
        line = one_paragraph(result, "No space left on device")
        assert "the previous last.ckpt is intact" in line
        assert not list(disk.glob("*.partial"))
        steps = ckpt_state(disk / "last.ckpt")["lightning_pg"]["num_timesteps"]
        assert 2048 <= steps < 100000


def test_a_save_that_fails_midway_leaves_the_previous_last_ckpt_and_no_partial_file(tmp_path, monkeypatch):
    """A checkpoint write that dies half-way (half its bytes written, then ENOSPC) leaves last.ckpt as it was:
    each file is written beside it and renamed over it only once complete. (The third save fails: every
    128 env steps, so at 384; last.ckpt keeps the save at 256.)"""
    real_save, written = torch.save, []

    def save(obj, f, *args, **kwargs):
        if not hasattr(f, "name"):  # an in-memory copy (io.BytesIO), not a file on disk
            return real_save(obj, f, *args, **kwargs)
        written.append(obj["lightning_pg"]["num_timesteps"])
        if len(written) < 3:
            return real_save(obj, f, *args, **kwargs)
        data = io.BytesIO()
        real_save(obj, data)
        f.write(data.getvalue()[: len(data.getvalue()) // 2])
        f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save)
    model = lp.PPO(env_id="CartPole-v1", num_envs=2, n_steps=32, batch_size=64, n_epochs=1, total_timesteps=640,
                   eval_every=-1)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                         default_root_dir=tmp_path, max_epochs=-1, callbacks=[RLCheckpoint(every_n_env_steps=128)])
    with pytest.raises(CheckpointWriteError, match="No space left on device.*the previous last.ckpt is intact"):
        trainer.fit(model)
    assert written == [128, 256, 384]
    folder = tmp_path / "checkpoints"
    assert [p.name for p in folder.iterdir()] == ["last.ckpt"]  # no partial file, nothing else
    assert ckpt_state(folder / "last.ckpt")["lightning_pg"]["num_timesteps"] == 256


def test_full_system_temp_folder_does_not_stop_saving(tmp_path):
    with tmpfs(tmp_path / "tmp", "4k") as tmp:
        (tmp / "fill").write_bytes(b"\0" * 4096)
        result = run_cli("--model.total_timesteps=2048", "--model.eval_every=1024", config=PPO,
                         root=tmp_path / "run", env=cli_env(TMPDIR=str(tmp)))
        assert result.returncode == 0, result.stderr[-2000:]
    assert ckpt_state(run_folder(tmp_path / "run") / "checkpoints" / "last.ckpt")["lightning_pg"]["num_timesteps"] == 2048
    assert (run_folder(tmp_path / "run") / "checkpoints" / "best.ckpt").exists()


def test_read_only_checkpoint_folder(trained, tmp_path):
    with tmpfs(tmp_path / "ro", "1m") as folder:
        shutil.copytree(run_folder(trained) / "checkpoints", run_folder(folder) / "checkpoints")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        result = run_cli("--model.total_timesteps=4096", "--ckpt_path=last", config=PPO, root=folder)
        one_paragraph(result, "cannot be written (Read-only file system)")


def _slow_run(root, *extra):
    """PPO on an env whose steps turn slow after 300 (1 s of CPU each): a 64-step rollout then takes ~60 s."""
    args = cli_args("--model.env_id=tests.envs:SlowAfter", "--model.num_envs=1", "--model.n_steps=64",
                    "--model.batch_size=64", "--model.eval_every=-1", "--checkpoint.every_n_env_steps=64", *extra,
                    config=PPO, root=root)
    proc = subprocess.Popen(args, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = run_folder(root) / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # the fast steps end at 300: last.ckpt at 256 stands
        if last.exists() and ckpt_state(last)["lightning_pg"]["num_timesteps"] == 256:
            break
        time.sleep(0.1)
    time.sleep(2)  # well into the slow rollout
    assert proc.poll() is None
    return proc, last


def test_sigterm_meets_its_grace_period_when_a_rollout_takes_a_minute(tmp_path):
    proc, last = _slow_run(tmp_path, "--checkpoint.stop_grace_s=5")
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert time.time() - sent <= 5 + 5
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "no batch boundary came within stop_grace_s=5 s" in stderr
    assert f"The last checkpoint that stands: {last} (at 256 env steps)" in stderr
    assert ckpt_state(last)["lightning_pg"]["num_timesteps"] == 256
    assert not list(last.parent.glob("*.partial"))


def test_second_ctrl_c_stops_at_once_without_saving(tmp_path):
    proc, last = _slow_run(tmp_path)
    before = last.read_bytes()
    proc.send_signal(signal.SIGINT)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Stopped at once (SIGINT again), without saving" in stderr and "Traceback" not in stderr
    assert last.read_bytes() == before


def test_two_fits_of_one_config_keep_both_runs(trained, tmp_path):
    root = _copy_run(trained, tmp_path)
    first = run_folder(root)
    before = (first / "checkpoints" / "best.ckpt").read_bytes()
    again = run_cli(*SHORT, "--seed_everything=1", config=PPO, root=root)
    assert again.returncode == 0, again.stderr[-2000:]
    second = run_folder(root)
    assert second != first and f"run folder {second}" in again.stderr
    assert (first / "checkpoints" / "best.ckpt").read_bytes() == before  # the first run's best agent stays
    assert (second / "checkpoints" / "best.ckpt").is_file() and (second / "config.yaml").is_file()
    # `--ckpt_path last` resumes the newest run, in its own folder
    resumed = run_cli("--model.total_timesteps=3072", "--model.eval_every=-1", "--ckpt_path=last", config=PPO, root=root)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert sorted(p.name for p in root.iterdir()) == sorted([first.name, second.name])
    assert ckpt_state(second / "checkpoints" / "last.ckpt")["lightning_pg"]["num_timesteps"] == 3072
    # validate reads the newest best.ckpt and writes nothing
    files = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    validated = run_cli("--ckpt_path=best", config=PPO, root=root, logger="true", subcommand="validate")
    assert validated.returncode == 0, validated.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == files


def test_one_writer_per_run_folder(tmp_path):
    proc, last = _slow_run(tmp_path)
    try:
        before = last.read_bytes()
        second = run_cli("--model.env_id=tests.envs:SlowAfter", "--model.num_envs=1", "--model.n_steps=64",
                         "--model.batch_size=64", "--model.total_timesteps=4096", "--ckpt_path=last", config=PPO,
                         root=tmp_path)  # resumes the same run folder
        line = one_paragraph(second, "Another lightning_pg run")
        assert f"pid {proc.pid}" in line
        assert last.read_bytes() == before
    finally:
        proc.kill()
        proc.wait()
    # SIGKILL left the lock file behind: the OS released its lock, so the next run into the folder goes ahead,
    # and removes the partial file of a write a kill cut short (fresh envs: the slow ones pickled in the
    # checkpoint are replaced, as env_kwargs differ)
    torn = last.parent / "last.ckpt.partial"
    torn.write_bytes(b"torn")
    after = run_cli("--model.env_id=tests.envs:SlowAfter", "--model.env_kwargs={fast: 100000}", "--model.num_envs=1",
                    "--model.n_steps=64", "--model.batch_size=64", "--model.eval_every=-1",
                    "--model.total_timesteps=512", "--ckpt_path=last", config=PPO, root=tmp_path)
    assert after.returncode == 0, after.stderr[-2000:]
    assert not torn.exists() and run_folder(tmp_path) == last.parent.parent


def test_wandb_online_without_a_network_falls_back_to_offline(tmp_path):
    start = time.time()
    result = run_cli("--model.total_timesteps=512", "--model.eval_every=-1", config=PPO, root=tmp_path,
                     logger="true", env=cli_env(WANDB_MODE="online", WANDB_API_KEY="x" * 40,
                                                WANDB_BASE_URL="http://127.0.0.1:9", WANDB_INIT_TIMEOUT="3"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "W&B could not start online" in result.stderr and "wandb sync" in result.stderr
    assert list((run_folder(tmp_path) / "wandb").glob("offline-run-*"))
    assert time.time() - start < 90


@pytest.mark.parametrize("config, extra, said", [
    ("configs/a2c_cartpole.yaml", ["--model.normalize_reward=true"], "the reward normalizer's running returns restart"),
    ("configs/ddpg_pendulum.yaml", ["--model.action_noise=ornstein-uhlenbeck", "--model.learning_starts=100"],
     "exploration noise is for another num_envs or number of processes: it restarts at 0"),
])
def test_resume_with_fewer_envs_restores_what_still_fits_and_says_what_restarts(tmp_path, config, extra, said):
    common = [*extra, "--model.eval_every=-1", "--checkpoint.every_n_env_steps=100"]
    first = run_cli(*common, "--model.num_envs=4", "--model.total_timesteps=400", config=config, root=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    resumed = run_cli(*common, "--model.num_envs=1", "--model.total_timesteps=800", "--ckpt_path=last",
                      config=config, root=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "differ from the checkpoint's" in resumed.stderr and said in resumed.stderr
    assert ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")["lightning_pg"]["num_timesteps"] >= 800
