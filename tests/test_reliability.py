"""Faults with real processes: Ctrl+C and resume give the same weights bit for bit; SIGKILL never loses more
than a checkpoint interval; bad input and divergence leave the last checkpoint intact."""
import glob
import re
import signal
import subprocess
import time

import pytest
import torch

from tests.helpers import REPO, ckpt_state, cli_args, cli_env, csv_logger, csv_rows, run_cli, run_folder

DDP = ["--trainer.strategy=ddp", "--trainer.devices=2"]
BIT_IDENTICAL = {
    # config: (budget, extra args); budgets keep each run to a few seconds of training
    "ppo_cartpole.yaml": (30_720, ["--model.eval_every=8192"]),
    "a2c_cartpole.yaml": (30_000, ["--model.eval_every=8000"]),
    "reinforce_cartpole.yaml": (30_000, ["--model.eval_every=8000"]),
    "trpo_cartpole.yaml": (20_480, ["--model.eval_every=4096"]),
    "ppo_pendulum_gsde.yaml": (12_288, ["--model.eval_every=4096"]),  # exploration matrices drawn again exactly
    # off-policy: the replay buffer, the noise process and the target networks come back too
    **{config: (2_000, ["--model.eval_every=1000", "--model.learning_starts=300", "--model.network=[64,64]"])
       for config in ("sac_pendulum.yaml", "td3_pendulum.yaml", "ddpg_pendulum.yaml")},
    # two DDP processes: every rank's envs, RNG streams and replay buffer come back to that rank
    "ppo_cartpole.yaml ddp": (30_720, ["--model.eval_every=8192", *DDP]),
    "sac_pendulum.yaml ddp": (2_000, ["--model.eval_every=1000", "--model.learning_starts=300",
                                      "--model.network=[64,64]", *DDP]),
}


def _fit_args(config, budget, extra, root):
    return cli_args(f"--model.total_timesteps={budget}", "--seed_everything=7", "--model.log_every=200",
                    "--checkpoint.every_n_env_steps=1000000000", *extra, config=f"configs/{config.split()[0]}",
                    root=root, logger=csv_logger(root))


def _wait_for_progress(root, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        files = glob.glob(f"{root}/csv/version_*/metrics.csv")
        if files and sum(1 for _ in open(files[0])) > 3:  # a few logged points: training is under way
            return
        time.sleep(0.05)
    raise AssertionError("the run made no progress")


def _state(path):
    state = ckpt_state(path)
    return state["state_dict"], state["optimizer_states"], state["lightning_pg"]["num_timesteps"], state["global_step"]


@pytest.mark.parametrize("config", list(BIT_IDENTICAL))
def test_ctrl_c_then_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, config):
    budget, extra = BIT_IDENTICAL[config]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    result = subprocess.run(_fit_args(config, budget, extra, straight), cwd=REPO, env=cli_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]

    proc = subprocess.Popen(_fit_args(config, budget, extra, broken), cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_progress(broken, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    stopped_at = ckpt_state(run_folder(broken) / "checkpoints" / "last.ckpt")["lightning_pg"]["num_timesteps"]
    assert 0 < stopped_at < budget
    resumed = subprocess.run(_fit_args(config, budget, extra, broken) + ["--ckpt_path=last"], cwd=REPO, env=cli_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    weights_a, optim_a, steps_a, global_a = _state(run_folder(straight) / "checkpoints" / "last.ckpt")
    weights_b, optim_b, steps_b, global_b = _state(run_folder(broken) / "checkpoints" / "last.ckpt")
    assert (steps_a, global_a) == (steps_b, global_b)
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
    for group_a, group_b in zip(optim_a, optim_b):
        for key, value in group_a["state"].items():
            for field in value:
                assert torch.equal(torch.as_tensor(value[field]), torch.as_tensor(group_b["state"][key][field]))


def test_sigkill_at_any_moment_never_loses_more_than_a_checkpoint_interval(tmp_path):
    budget = 76_800  # large enough that no attempt finishes before its kill (PPO runs ~12k env steps/s here)
    args = cli_args(f"--model.total_timesteps={budget}", "--model.eval_every=-1", "--model.log_every=256",
                    "--checkpoint.every_n_env_steps=256", config="configs/ppo_cartpole.yaml", root=tmp_path,
                    logger=csv_logger(tmp_path))
    last = run_folder(tmp_path) / "checkpoints" / "last.ckpt"
    seen = [0]
    for attempt, delay in enumerate((0.0, 0.6, 1.3)):
        proc = subprocess.Popen(args + (["--ckpt_path=last"] if attempt else []), cwd=REPO, env=cli_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while not (last.exists() and ckpt_state(last)["lightning_pg"]["num_timesteps"] > seen[-1]):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.05)
        time.sleep(delay)  # kill at different moments: mid-rollout, mid-update, mid-save
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        for path in glob.glob(f"{run_folder(tmp_path)}/checkpoints/*.ckpt"):  # every checkpoint on disk loads
            torch.load(path, map_location="cpu", weights_only=True)
        steps = ckpt_state(last)["lightning_pg"]["num_timesteps"]
        assert seen[-1] < steps < budget  # went forward, not from zero, and was not finished yet
        seen.append(steps)
    final = run_cli(f"--model.total_timesteps={budget}", "--model.eval_every=-1", "--checkpoint.every_n_env_steps=256",
                    "--ckpt_path=last", config="configs/ppo_cartpole.yaml", root=tmp_path)
    assert final.returncode == 0, final.stderr[-2000:]
    assert ckpt_state(last)["lightning_pg"]["num_timesteps"] >= budget


def test_sigterm_saves_and_exits_like_ctrl_c(tmp_path):
    """The last.ckpt SIGTERM leaves is at the stop point, not the periodic save before it (12,800 env steps: 50
    256-step rollouts, a second or more; the signal comes right after that save, so the stop is a rollout or two
    later)."""
    args = cli_args("--model.total_timesteps=100000000", "--model.log_every=200", "--model.eval_every=-1",
                    "--checkpoint.every_n_env_steps=12800", config="configs/ppo_cartpole.yaml", root=tmp_path,
                    logger=csv_logger(tmp_path))
    proc = subprocess.Popen(args, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = run_folder(tmp_path) / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.exists():  # the first periodic save
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr, stderr[-2000:]
    stopped_at = int(re.search(r"Stopped by SIGTERM at (\d+) env steps", stderr).group(1))
    logged = [int(float(r["time/env_steps"])) for r in csv_rows(tmp_path)[0]]  # every rollout logs (log_every 200)
    assert stopped_at == max(logged) and stopped_at % 256 == 0
    assert 12800 < stopped_at < 2 * 12800  # past the periodic save, before the next one
    assert ckpt_state(last)["lightning_pg"]["num_timesteps"] == stopped_at


def test_checkpoint_of_another_algorithm_is_refused_and_left_alone(tmp_path):
    reinforce = tmp_path / "reinforce"
    assert run_cli("--model.total_timesteps=500", root=reinforce).returncode == 0
    path = run_folder(reinforce) / "checkpoints" / "last.ckpt"
    before = path.read_bytes()
    result = run_cli("--model.total_timesteps=1000", f"--ckpt_path={path}", config="configs/ppo_cartpole.yaml",
                     root=tmp_path / "ppo")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "holds a REINFORCE model, but the config builds PPO" in result.stderr
    assert path.read_bytes() == before and not (run_folder(tmp_path / "ppo") / "checkpoints" / "last.ckpt").exists()


def test_env_that_raises_in_reset(tmp_path):
    result = run_cli("--model.env_id=tests.envs:RaisesOnReset", "--model.total_timesteps=500", root=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "raised ValueError in reset(): could not load the level file" in result.stderr


def test_divergence_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    result = run_cli("--model.env_id=tests.envs:HugeRewardAfter", "--model.env_kwargs={steps: 3000}",
                     "--model.total_timesteps=100000", "--model.eval_every=-1", "--checkpoint.every_n_env_steps=500",
                     "--model.baseline=value", root=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Training diverged at" in result.stderr and "loss/value=inf" in result.stderr
    state = ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")
    assert 0 < state["lightning_pg"]["num_timesteps"] < 8 * 3000  # saved before the rewards blew up
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
