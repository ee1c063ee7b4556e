"""A3C: the learner applies each worker's gradient as one optimizer step; workers learn CartPole together; a
worker's error or death stops the run naming it and leaves no process; Ctrl+C saves and the run resumes."""
import csv
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

import lightning_pg as lp
from tests.helpers import (REPO, alive, ckpt_state, cli_args, cli_env, interrupt_like_a_terminal, run_cli, run_folder,
                           wait_for_children)

A3C = "configs/a3c_cartpole.yaml"


class ScriptedWorkers:
    """Stands in for the worker processes: known gradients, as if computed with weights ``lag`` updates old."""

    holds_processes = False

    def __init__(self, module, gradients, lag):
        self.module, self.gradients, self.lag, self.current_version = module, gradients, lag, 0

    def __iter__(self):
        for g in self.gradients:
            yield {"gradients": g, "version": max(self.current_version - self.lag, 0), "worker": 0,
                   "losses": {"loss_policy": torch.tensor(0.0)}, "env_steps": 10,
                   "episode_returns": np.zeros(0), "episode_lengths": np.zeros(0)}

    def publish(self, params):
        self.current_version += 1


@pytest.mark.parametrize("direct", [True, False])
def test_each_gradient_is_one_optimizer_step_as_if_computed_here(direct, monkeypatch):
    """Reference step: RMSprop (A2C's) with the gradient's norm clipped, applied to the received vectors, whether
    the step is taken directly or through Lightning's manual-optimization calls (the gradient of ⟨θ, g⟩)."""
    from lightning_pg.optimizer_steps import OptimizerSteps

    monkeypatch.setattr(OptimizerSteps, "direct_enabled", direct)
    torch.manual_seed(0)
    size = sum(p.numel() for p in lp.A3C(env_id="CartPole-v1").parameters())
    gradients = [torch.randn(size) for _ in range(3)]

    class Scripted(lp.A3C):
        def make_data(self):
            return ScriptedWorkers(self, gradients, lag=1)

    pl.seed_everything(0)
    model = Scripted(env_id="CartPole-v1", total_timesteps=30, eval_every=-1)
    reference = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone().requires_grad_()
    optimizer = torch.optim.RMSprop([reference], lr=7e-4, alpha=0.99, eps=1e-5)
    for g in gradients:
        reference.grad = g.clone()
        torch.nn.utils.clip_grad_norm_([reference], 0.5)
        optimizer.step()
    pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
               enable_checkpointing=False, max_epochs=-1).fit(model)
    torch.testing.assert_close(torch.cat([p.detach().reshape(-1) for p in model.parameters()]), reference.detach())
    assert model.num_timesteps == 30 and model.trainer.global_step == 3


def test_workers_learn_cartpole_together(tmp_path):
    """The short form of `python benchmarks/learning.py configs/a3c_cartpole.yaml` (500k steps: 500 on seeds 0,
    1 and 2). Asynchronous, so not repeatable: how stale the gradients are depends on the machine's load, and
    a CartPole policy this early may still swing between good and poor from one evaluation to the next (a
    busy machine once ended at 27.9 after evaluating 500 at 25k steps). So: its evaluations every 20k steps
    reach 300 at least once, and best.ckpt holds that policy."""
    result = run_cli("--model.total_timesteps=100000", "--model.eval_every=20000", config=A3C, root=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(run_folder(tmp_path) / "metrics.csv") as file:
        evals = [float(row["eval/return_mean"]) for row in csv.DictReader(file) if row["eval/return_mean"]]
    assert len(evals) == 5 and max(evals) >= 300, evals  # random play: about 22
    best = lp.A3C.load_from_checkpoint(run_folder(tmp_path) / "checkpoints" / "best.ckpt")
    assert lp.evaluate(best, 10)[0] >= 200  # from other start states than its evaluation


def test_a_killed_worker_stops_the_run_by_name_and_leaves_no_process(tmp_path):
    proc = subprocess.Popen(cli_args("--model.total_timesteps=100000000", "--checkpoint.every_n_env_steps=5000",
                                     config=A3C, root=tmp_path), cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    workers = wait_for_children(proc, 2)
    assert len(workers) >= 2
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("run_*/checkpoints/last.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.1)  # a first checkpoint (5,000 env steps), so there is one to keep
    last = run_folder(tmp_path) / "checkpoints" / "last.ckpt"
    os.kill(workers[-1], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert f"(pid {workers[-1]}) died with exit code -9" in stderr and "A3C worker 1" in stderr
    time.sleep(0.5)
    assert not [w for w in workers if alive(w)]
    assert ckpt_state(last)["lightning_pg"]["num_timesteps"] >= 5000  # the last checkpoint stands, intact


def test_an_env_error_in_a_worker_is_the_one_paragraph_naming_the_worker(tmp_path):
    result = run_cli("--model.env_id=tests.envs:RaisesAfter", "--model.env_kwargs={steps: 30}", config=A3C,
                     root=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "A3C worker" in result.stderr and "simulator exploded" in result.stderr


def test_ctrl_c_stops_every_worker_saves_and_the_run_resumes(tmp_path):
    args = ("--checkpoint.every_n_env_steps=100000000",)
    proc = subprocess.Popen(cli_args("--model.total_timesteps=100000000", *args, config=A3C, root=tmp_path),
                            cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = wait_for_children(proc, 2)
    stderr = interrupt_like_a_terminal(proc, signal.SIGINT)
    assert proc.returncode == 128 + signal.SIGINT and "Traceback" not in stderr, stderr[-3000:]
    time.sleep(0.5)
    assert workers and not [w for w in workers if alive(w)]
    state = ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")
    stopped_at = state["lightning_pg"]["num_timesteps"]
    assert stopped_at > 0 and state["optimizer_states"][0]["state"]

    resumed = run_cli(f"--model.total_timesteps={stopped_at + 5000}", "--ckpt_path=last", *args, config=A3C,
                      root=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "A3C resumes its weights, optimizer and counters" in resumed.stderr
    final = ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")["lightning_pg"]["num_timesteps"]
    assert stopped_at + 5000 <= final < stopped_at + 5000 + 2 * 80


def test_a3c_refuses_normalization_and_async_envs():
    with pytest.raises(lp.ConfigError, match="each keep their own running observation"):
        lp.A3C(env_id="CartPole-v1", normalize_obs=True)
    with pytest.raises(lp.ConfigError, match="cannot start async env workers"):
        lp.A3C(env_id="CartPole-v1", vectorization="async")


def test_a_fit_that_fails_leaves_no_worker():
    """Lightning skips teardown when fit raises: the workers are closed all the same (Python API, no exit)."""
    import multiprocessing

    class BrokenUpdate(lp.A3C):
        def update(self, batch):
            if self.num_timesteps > 400:
                raise ValueError("a bug in update")
            return super().update(batch)

    model = BrokenUpdate(env_id="CartPole-v1", num_envs=2, total_timesteps=100_000, eval_every=-1)
    with pytest.raises(ValueError, match="a bug in update"):
        pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, max_epochs=-1).fit(model)
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("A3C worker")]


def test_a3c_learns_on_continuous_actions_too():
    """Pendulum (Box actions): the workers' gradients move the Gaussian policy's mean and log-std."""
    pl.seed_everything(0)
    model = lp.A3C(env_id="Pendulum-v1", num_envs=2, n_steps=8, total_timesteps=2000, eval_every=-1)
    before = [p.detach().clone() for p in model.policy.pi_head.parameters()]
    pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
               enable_checkpointing=False, max_epochs=-1).fit(model)
    assert model.num_timesteps >= 2000 and model.trainer.global_step >= 2000 // 16
    assert all(not torch.equal(a, b) for a, b in zip(before, model.policy.pi_head.parameters()))
    assert model.predict(np.zeros((4, 3), np.float32)).shape == (4, 1)
