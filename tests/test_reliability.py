"""Faults with real processes: Ctrl+C and resume give the same weights bit for bit; SIGKILL never loses more
than a checkpoint interval; bad input and divergence leave the last checkpoint intact."""
import glob
import os
import signal
import subprocess
import time

import pytest
import torch

from tests.helpers import REPO, ckpt_state, cli_args, cli_env, csv_logger, run_cli

BIT_IDENTICAL = {
    # config: (budget, extra args); budgets keep each run to a few seconds of training
    "ppo_cartpole.yaml": (30_720, ["--model.eval_every=8192"]),
    "a2c_cartpole.yaml": (30_000, ["--model.eval_every=8000"]),
    "reinforce_cartpole.yaml": (30_000, ["--model.eval_every=8000"]),
}


def _fit_args(config, budget, extra, root):
    return cli_args(f"--model.total_timesteps={budget}", "--seed_everything=7", "--model.log_every=200",
                    "--checkpoint.every_n_env_steps=1000000000", *extra, config=f"configs/{config}", root=root,
                    logger=csv_logger(root))


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
    stopped_at = ckpt_state(broken / "checkpoints" / "last.ckpt")["lightning_pg"]["num_timesteps"]
    assert 0 < stopped_at < budget
    resumed = subprocess.run(_fit_args(config, budget, extra, broken) + ["--ckpt_path=last"], cwd=REPO, env=cli_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    weights_a, optim_a, steps_a, global_a = _state(straight / "checkpoints" / "last.ckpt")
    weights_b, optim_b, steps_b, global_b = _state(broken / "checkpoints" / "last.ckpt")
    assert (steps_a, global_a) == (steps_b, global_b)
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
    for group_a, group_b in zip(optim_a, optim_b):
        for key, value in group_a["state"].items():
            for field in value:
                assert torch.equal(torch.as_tensor(value[field]), torch.as_tensor(group_b["state"][key][field]))
