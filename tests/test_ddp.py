"""Lightning's DDP on CPU (two processes, gloo): env steps are summed over ranks and ranks play their own envs."""
import csv
import signal
import subprocess
import time

import pytest
import torch

from tests.helpers import REPO, ckpt_state, cli_args, cli_env, run_cli, run_folder


def test_ppo_under_ddp_counts_env_steps_over_both_ranks(tmp_path):
    result = run_cli("--trainer.strategy=ddp", "--trainer.devices=2", "--model.total_timesteps=8192",
                     "--model.eval_every=-1", config="configs/ppo_cartpole.yaml", root=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    state = ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")
    # each rank steps 8 envs x 32 steps per rollout, 512 env steps per rollout in all: 16 rollouts of 20
    # full-batch epochs reach 8192. Counting one rank only would take 32 rollouts (640 optimizer steps).
    assert state["lightning_pg"]["num_timesteps"] == 8192
    assert state["global_step"] == 16 * 20


OFF_POLICY = ("--model.total_timesteps=600", "--model.learning_starts=200", "--model.batch_size=64")


@pytest.mark.parametrize("config, args", [
    ("reinforce_cartpole.yaml", ("--model.total_timesteps=2000",)),
    ("a2c_cartpole.yaml", ("--model.total_timesteps=2000",)),
    ("trpo_cartpole.yaml", ("--model.total_timesteps=4096",)),  # its policy step averages over the ranks itself
    ("ppo_pendulum_gsde.yaml", ("--model.total_timesteps=8192",)),
    ("sac_pendulum.yaml", OFF_POLICY),  # several optimizers: each step leaves parameters out
    ("td3_pendulum.yaml", OFF_POLICY),
    ("ddpg_pendulum.yaml", OFF_POLICY),
])
def test_every_algorithm_trains_under_plain_ddp_with_the_same_weights_on_every_rank(tmp_path, config, args):
    report = tmp_path / "weights.txt"
    result = run_cli("--trainer.strategy=ddp", "--trainer.devices=2", "--model.eval_every=-1", *args,
                     '--trainer.callbacks=[{class_path: tests.ddp_checks.SameWeightsOnEveryRank}]',
                     config=f"configs/{config}", root=tmp_path, timeout=300,
                     env=cli_env(WEIGHTS_REPORT=str(report)))
    assert result.returncode == 0, result.stderr[-3000:]
    budget = int(args[0].split("=")[1])
    assert ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")["lightning_pg"]["num_timesteps"] >= budget
    assert float(report.read_text()) == 0.0  # DDP's averaged gradients (TRPO: its averaged natural gradient)


def test_a_stop_that_reaches_one_rank_stops_every_rank_at_the_same_batch_and_saves(tmp_path):
    """SIGTERM to rank 0 alone (as a scheduler may deliver it; a terminal's Ctrl+C reaches the ranks at
    slightly different moments): the ranks agree on the batch to stop at, where one saving alone would wait in
    a barrier for the others for ever."""
    args = cli_args("--trainer.strategy=ddp", "--trainer.devices=2", "--model.total_timesteps=10000000",
                    "--model.eval_every=-1", "--checkpoint.every_n_env_steps=100000000",
                    config="configs/ppo_cartpole.yaml", root=tmp_path)
    proc = subprocess.Popen(args, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(12)  # both ranks training
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Stopped by SIGTERM" in stderr and "Stopped at once" not in stderr
    state = ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")
    assert 0 < state["lightning_pg"]["num_timesteps"] < 10000000


def test_logged_episodes_cover_every_rank(tmp_path):
    """Episodes of exactly 10 steps: 8192 env steps over both ranks end about 819 of them, and the logged counts
    add up to that (rank 0's alone would be half)."""
    result = run_cli("--trainer.strategy=ddp", "--trainer.devices=2", "--model.total_timesteps=8192",
                     "--model.eval_every=-1", "--model.log_every=512", "--model.env_id=tests.envs:Counter",
                     "--model.env_kwargs={max_episode_steps: 10}", config="configs/ppo_cartpole.yaml", root=tmp_path,
                     timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(run_folder(tmp_path) / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row["train/episodes"]]
    assert 8192 // 10 - 2 * 8 <= sum(float(r["train/episodes"]) for r in rows) <= 8192 // 10  # less the open ones
    assert all(float(r["train/episode_return"]) == 10.0 and float(r["train/episode_length"]) == 10.0 for r in rows)


def _two_nodes(root, *args):
    """torchrun on two "nodes" of this machine (one process each, master 127.0.0.1): their return codes."""
    import socket
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
                               "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
                               *cli_args("--trainer.strategy=ddp", "--trainer.num_nodes=2", "--trainer.devices=1",
                                         "--model.eval_every=-1", *args, config="configs/ppo_cartpole.yaml",
                                         root=root)[1:]],
                              cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for node in (0, 1)]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    return [proc.returncode for proc in procs], [err for _, err in outputs]


def test_two_nodes_train_into_one_run_folder_and_resume(tmp_path):
    codes, errors = _two_nodes(tmp_path, "--model.total_timesteps=4096")
    assert codes == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_1"]  # rank 0's; the other node wrote nothing
    assert "lightning_pg: run folder" in errors[0] and "lightning_pg: run folder" not in errors[1]  # one summary
    last = tmp_path / "run_1" / "checkpoints" / "last.ckpt"
    assert ckpt_state(last)["lightning_pg"]["num_timesteps"] == 4096
    codes, errors = _two_nodes(tmp_path, "--model.total_timesteps=8192", "--ckpt_path=last")
    assert codes == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_1"]
    assert ckpt_state(last)["lightning_pg"]["num_timesteps"] == 8192


def test_processes_started_without_a_seed_repeat_from_the_one_config_yaml_keeps(tmp_path):
    """torchrun processes started without --seed_everything each draw a seed; every rank takes rank 0's, the
    one config.yaml records, so that seed repeats the whole run. (When the other node kept a seed of its own,
    its envs were seeded by a number nobody recorded, and the repeat's weights differed.)"""
    import yaml

    codes, errors = _two_nodes(tmp_path / "drawn", "--model.total_timesteps=2048", "--seed_everything=true")
    assert codes == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    seed = yaml.safe_load((tmp_path / "drawn" / "run_1" / "config.yaml").read_text())["seed_everything"]
    assert isinstance(seed, int)
    codes, errors = _two_nodes(tmp_path / "repeat", "--model.total_timesteps=2048", f"--seed_everything={seed}")
    assert codes == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    drawn, repeat = (ckpt_state(tmp_path / run / "run_1" / "checkpoints" / "last.ckpt")["state_dict"]
                     for run in ("drawn", "repeat"))
    assert drawn.keys() == repeat.keys()
    assert all(torch.equal(drawn[k], repeat[k]) for k in drawn)


@pytest.mark.parametrize("env, first", [
    ({}, True),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, False),  # torchrun, another node's process
    ({"RANK": "1"}, True),  # a stray RANK in a one-process run
    ({"LOCAL_RANK": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "interactive"}, False),
    ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_JOB_NAME": "train"}, False),  # srun's second task
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_NAME": "train"}, True),
])
def test_the_cli_tells_the_runs_first_process_as_lightning_does(monkeypatch, env, first):
    from lightning_pg.cli import _first_process

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _first_process() is first


def test_episode_metrics_keep_full_precision_whatever_the_weights_precision():
    import torch

    import lightning_pg as lp

    model = lp.PPO(env_id="CartPole-v1").to(torch.bfloat16)  # what bf16-true does to the module
    model._episode_returns += [7.0] * 300 + [7.25]
    model._episode_lengths += [7] * 301
    metrics = model._episode_metrics()
    assert metrics["train/episodes"] == 301.0 and metrics["train/episode_length"] == 7.0
    assert metrics["train/episode_return"] == (7.0 * 300 + 7.25) / 301


def test_the_ranks_share_the_evaluation_and_get_the_one_process_figures(tmp_path):
    """5 evaluation episodes over 2 ranks (eval envs 0, 2, 4 and 1, 3): the logged mean and std are those of
    the same 5 episodes played by one process from the final weights."""
    import lightning_pg as lp
    from lightning_pg.algorithms.base import EVAL_SEED

    result = run_cli("--trainer.strategy=ddp", "--trainer.devices=2", "--model.total_timesteps=4096",
                     "--model.eval_every=0", "--model.eval_episodes=5", config="configs/ppo_cartpole.yaml",
                     root=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(run_folder(tmp_path) / "metrics.csv") as file:
        logged = [row for row in csv.DictReader(file) if row["eval/return_mean"]][-1]
    model = lp.PPO.load_from_checkpoint(run_folder(tmp_path) / "checkpoints" / "last.ckpt")
    mean, std = lp.evaluate(model, 5, seed=EVAL_SEED)
    assert float(logged["eval/return_mean"]) == pytest.approx(mean, rel=1e-9)
    assert float(logged["eval/return_std"]) == pytest.approx(std, rel=1e-6, abs=1e-6)
    assert std > 0  # episodes of different lengths: a wrong split would show
