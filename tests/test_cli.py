"""The command line end to end, in real subprocesses: fit, checkpoints, resume, Ctrl+C, W&B, bad input."""
import glob
import re
import signal
import subprocess
import sys
import time

import gymnasium
import numpy as np
import pytest
import torch
import yaml

import lightning_pg as lp
from tests.helpers import REPO, ckpt_state, cli_args, cli_env, csv_logger, csv_rows, run_cli, run_folder, wandb_records


def test_fit_checkpoint_load_evaluate(tmp_path):
    result = run_cli(
        "--model.total_timesteps=6000", "--model.eval_every=3000", "--checkpoint.every_n_env_steps=2000",
        "--trainer.enable_progress_bar=true", root=tmp_path, logger=csv_logger(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "/6,000 env steps" in result.stdout  # the progress (plain lines in a pipe) counts env steps to the budget
    last = run_folder(tmp_path) / "checkpoints" / "last.ckpt"
    assert last.is_file() and (run_folder(tmp_path) / "checkpoints" / "best.ckpt").is_file()

    model = lp.REINFORCE.load_from_checkpoint(last)
    assert 6000 <= model.num_timesteps < 6000 + 8 * 500

    (rows,) = csv_rows(tmp_path)
    logged = set().union(*rows)
    assert {"train/episode_return", "train/episode_length", "time/env_steps", "time/sps", "loss/policy",
            "loss/value", "loss/entropy", "eval/return_mean", "eval/return_std"} <= logged
    steps = [int(float(r["time/env_steps"])) for r in rows]
    assert steps == sorted(steps) and steps[-1] == model.num_timesteps
    evals = [r for r in rows if "eval/return_mean" in r]
    assert len(evals) == 2  # at 3000 env steps and at the end

    # the loaded weights are those the run evaluated at its end (the same 10 evaluation episodes), and they learned:
    # at least twice the return of uniformly random actions (about 22 on CartPole)
    from lightning_pg.algorithms.base import EVAL_SEED

    mean, std = lp.evaluate(model, n_episodes=10, seed=EVAL_SEED)
    assert (mean, std) == pytest.approx((float(evals[-1]["eval/return_mean"]), float(evals[-1]["eval/return_std"])),
                                        rel=1e-5)
    env, random_returns = gymnasium.make("CartPole-v1"), []
    env.action_space.seed(0)
    for episode in range(50):
        env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total, done = total + reward, terminated or truncated
        random_returns.append(total)
    assert 15 < np.mean(random_returns) < 30 and mean > 2 * np.mean(random_returns), (mean, np.mean(random_returns))


def test_resume_continues_the_env_step_count(tmp_path):
    first = run_cli("--model.total_timesteps=3000", root=tmp_path, logger=csv_logger(tmp_path))
    assert first.returncode == 0, first.stderr
    done = ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")
    assert done["lightning_pg"]["num_timesteps"] >= 3000

    second = run_cli("--model.total_timesteps=6000", "--ckpt_path=last", root=tmp_path, logger=csv_logger(tmp_path))
    assert second.returncode == 0, second.stderr
    resumed = ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")
    assert resumed["lightning_pg"]["num_timesteps"] >= 6000
    assert resumed["global_step"] > done["global_step"]  # the optimizer-step count went on too
    _, second_rows = csv_rows(tmp_path)
    first_logged = min(int(float(r["time/env_steps"])) for r in second_rows)
    assert first_logged > done["lightning_pg"]["num_timesteps"]  # not from zero


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes_the_budget(tmp_path):
    cmd = cli_args("--model.total_timesteps=100000000", "--checkpoint.every_n_env_steps=100000000",
                   root=tmp_path, logger=csv_logger(tmp_path))
    proc = subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not glob.glob(f"{tmp_path}/csv/version_0/metrics.csv") and time.time() < deadline:
        time.sleep(0.2)  # training has logged at least once
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, stderr
    assert "Traceback" not in stderr and "Resume with --ckpt_path last" in stderr
    state = ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")
    stopped_at = state["lightning_pg"]["num_timesteps"]
    assert 0 < stopped_at < 100_000_000

    budget = stopped_at + 3000
    resumed = run_cli(f"--model.total_timesteps={budget}", "--ckpt_path=last", root=tmp_path,
                      logger=csv_logger(tmp_path))
    assert resumed.returncode == 0, resumed.stderr
    final = ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")["lightning_pg"]["num_timesteps"]
    assert budget <= final < budget + 8 * 500
    assert min(int(float(r["time/env_steps"])) for r in csv_rows(tmp_path)[1]) > stopped_at


def test_custom_env_by_entry_point(tmp_path):
    result = run_cli("--model.env_id=tests.envs:TwoArmedBandit", "--model.total_timesteps=4000",
                     "--model.network=[]", root=tmp_path)
    assert result.returncode == 0, result.stderr
    import tests.envs  # noqa: F401 - a checkpoint's env class loads once its module is imported (lightning_pg.trust)
    model = lp.REINFORCE.load_from_checkpoint(run_folder(tmp_path) / "checkpoints" / "last.ckpt")
    assert lp.evaluate(model, n_episodes=2)[0] == 3.0  # it learned to pull the better arm


def test_validate_and_test_play_evaluation_episodes(tmp_path):
    assert run_cli("--model.total_timesteps=2000", root=tmp_path).returncode == 0
    ckpt = run_folder(tmp_path) / "checkpoints" / "last.ckpt"
    from lightning_pg.algorithms.base import EVAL_SEED

    # the number validate and test print is evaluate() of the same weights, on the same episodes
    expected, _ = lp.evaluate(lp.REINFORCE.load_from_checkpoint(ckpt), 3, seed=EVAL_SEED)
    for sub in ("validate", "test"):
        result = run_cli(f"--ckpt_path={ckpt}", "--model.eval_episodes=3", root=tmp_path, subcommand=sub)
        assert result.returncode == 0, result.stderr
        printed = float(re.search(r"eval/return_mean\s*│?\s*([-\d.]+)", result.stdout).group(1))
        assert printed == pytest.approx(expected, abs=1e-4)


def test_default_logger_is_an_offline_wandb_run_with_config_and_metrics(tmp_path):
    env = cli_env()
    env.pop("WANDB_MODE", None)
    start = time.time()
    result = run_cli("--model.total_timesteps=3000", "--model.eval_every=1000", root=tmp_path, logger=None, env=env)
    assert result.returncode == 0, result.stderr
    assert time.time() - start < 120  # never waits on a network
    (run_file,) = glob.glob(f"{run_folder(tmp_path)}/wandb/offline-run-*/run-*.wandb")
    history, config = wandb_records(run_file)
    assert config["total_timesteps"] == 3000 and config["env_id"] == "CartPole-v1"
    assert config["config"]["model"]["class_path"] == "lightning_pg.REINFORCE"  # the full CLI config
    steps = [h["time/env_steps"] for h in history]
    assert steps == sorted(steps) and steps[-1] >= 3000
    assert any("train/episode_return" in h for h in history) and any("eval/return_mean" in h for h in history)

    # resuming continues the same W&B run
    resumed = run_cli("--model.total_timesteps=5000", "--ckpt_path=last", root=tmp_path, logger=None, env=env)
    assert resumed.returncode == 0, resumed.stderr
    runs = sorted(glob.glob(f"{run_folder(tmp_path)}/wandb/offline-run-*"))  # in the same run folder
    assert len(runs) == 2 and runs[0].rsplit("-", 1)[1] == runs[1].rsplit("-", 1)[1]


BAD_INPUTS = {
    "unknown env id": (["--model.env_id=NoSuchEnv-v0"], "Unknown environment id 'NoSuchEnv-v0'"),
    "missing entry point module": (["--model.env_id=no_such_pkg.envs:Thing"], "Cannot import module 'no_such_pkg.envs'"),
    "unsupported action space": (["--model.env_id=tests.envs:TupleActions"], "REINFORCE cannot act in"),
    "gamma out of range": (["--model.gamma=1.5"], "Invalid hyperparameter gamma=1.5"),
    "non-positive budget": (["--model.total_timesteps=0"], "Invalid hyperparameter total_timesteps=0"),
    "zero envs": (["--model.num_envs=0"], "Invalid hyperparameter num_envs=0"),
    "zero torch threads": (["--torch_threads=0"], "Invalid torch_threads=0"),
    "unknown hyperparameter": (["--model.not_a_param=3"], "REINFORCE has no hyperparameter 'not_a_param'"),
    "missing checkpoint": (["--ckpt_path=/no/such.ckpt"], "--ckpt_path /no/such.ckpt does not exist"),
    "missing config": (["--config=/no/such.yaml"], "File does not exist"),
    # Apple's MPS never exists on Linux: stands for any device the machine lacks (a GPU on a CPU-only machine)
    "absent accelerator": (["--trainer.accelerator=mps"], "The trainer settings cannot run here"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_nonzero_with_one_paragraph_and_no_traceback(tmp_path, case):
    args, message = BAD_INPUTS[case]
    result = run_cli(*args, root=tmp_path, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("lightning_pg: error:")]
    assert len(error_lines) == 1 and "Fix:" in error_lines[0]
    assert not (run_folder(tmp_path) / "checkpoints").exists()


@pytest.mark.parametrize("argv, message", [(["fitt"], "'fitt' is not a command"), ([], "No command was given")])
def test_an_unknown_or_missing_command_names_every_command(argv, message):
    result = subprocess.run([sys.executable, "-m", "lightning_pg", *argv], cwd=REPO, env=cli_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr and "fit, validate, test (Lightning's) or play, export, plot, tune" in result.stderr


@pytest.mark.parametrize("command, package", [("tune", "optuna"), ("export", "onnxscript"), ("plot", "matplotlib")])
def test_a_command_without_its_tools_extra_says_what_to_install(tmp_path, command, package):
    ckpt = tmp_path / "x.ckpt"
    argv = {"tune": ["--config", str(REPO / "configs/ppo_cartpole.yaml"), "--n_trials", "1",
                     f"--trainer.default_root_dir={tmp_path}"],
            "export": ["--ckpt_path", str(ckpt), "--format", "onnx", "--output", str(tmp_path / "p.onnx")],
            "plot": [str(tmp_path)]}[command]
    if command == "export":  # a real checkpoint, so the export gets as far as the exporter
        assert run_cli("--model.total_timesteps=64", "--model.eval_every=-1", root=tmp_path / "run").returncode == 0
        ckpt = run_folder(tmp_path / "run") / "checkpoints" / "last.ckpt"
        argv[1] = str(ckpt)
    if command == "plot":
        (tmp_path / "metrics.csv").write_text("time/env_steps,eval/return_mean\n100,1.0\n")
    code = ("import sys; from lightning_pg.cli import main\n"
            f"sys.modules[{package!r}] = None  # as if not installed (after Lightning's imports, which probe it)\n"
            f"main({[command, *argv]!r})")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cli_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"needs the package '{package}'" in result.stderr and "lightning_pg[tools]" in result.stderr


def test_debug_flag_shows_the_traceback(tmp_path):
    result = run_cli("--model.gamma=1.5", "--debug", root=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr and "ConfigError" in result.stderr


def test_env_failure_mid_run_keeps_the_last_checkpoint(tmp_path):
    ok = run_cli("--model.env_id=tests.envs:RaisesAfter", "--model.env_kwargs={steps: 100000}",
                 "--model.total_timesteps=2000", root=tmp_path)
    assert ok.returncode == 0, ok.stderr
    before = (run_folder(tmp_path) / "checkpoints" / "last.ckpt").read_bytes()
    for env_id, message in (("RaisesAfter", "raised RuntimeError in step(): simulator exploded"),
                            ("NaNAfter", "NaN or infinite")):
        bad = run_cli(f"--model.env_id=tests.envs:{env_id}", "--model.env_kwargs={steps: 30}",
                      "--model.total_timesteps=4000", "--ckpt_path=last", root=tmp_path)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert (run_folder(tmp_path) / "checkpoints" / "last.ckpt").read_bytes() == before


def test_a_checkpoint_of_the_earlier_layout_is_refused_in_one_paragraph(tmp_path):
    assert run_cli("--model.total_timesteps=500", root=tmp_path).returncode == 0
    path = run_folder(tmp_path) / "checkpoints" / "last.ckpt"
    state = torch.load(path, weights_only=False)
    del state["lightning_pg"]["format"]  # as 0.1.x wrote them
    torch.save(state, path)
    before = path.read_bytes()
    for subcommand, extra in (("fit", ["--ckpt_path=last"]), ("validate", [f"--ckpt_path={path}"])):
        result = run_cli("--model.total_timesteps=1000", *extra, root=tmp_path, subcommand=subcommand)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert "checkpoint format 1, this version reads 2" in result.stderr
    assert path.read_bytes() == before



def test_without_a_root_runs_go_under_runs_algorithm_env(tmp_path):
    """Not into the current folder, where the next run of another algorithm would overwrite them."""
    (tmp_path / "cfg.yaml").write_text("model:\n  class_path: lightning_pg.PPO\n  init_args:\n    env_id: CartPole-v1\n"
                                       "    n_steps: 64\n    batch_size: 64\n    total_timesteps: 512\n"
                                       "    eval_every: -1\ntrainer:\n  logger: false\n")
    result = subprocess.run([sys.executable, "-m", "lightning_pg", "fit", "--config", "cfg.yaml"], cwd=tmp_path,
                            env=cli_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml", "runs"]
    assert (tmp_path / "runs" / "ppo_cartpole_v1" / "run_1" / "checkpoints" / "last.ckpt").is_file()


def test_fits_started_together_each_get_a_run_folder_and_a_refused_one_leaves_none(tmp_path):
    """A sweep launching its fits at once: each takes the next free run_N (mkdir is atomic), none is refused for
    another's folder; a fit refused at start removes the folder it had taken."""
    args = ("--model.total_timesteps=256", "--model.eval_every=-1")
    procs = [subprocess.Popen(cli_args(*args, f"--seed_everything={seed}", config="configs/ppo_cartpole.yaml",
                                       root=tmp_path), cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for seed in range(3)]
    errors = [proc.communicate(timeout=300)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], errors
    runs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert runs == ["run_1", "run_2", "run_3"]
    assert sorted(yaml.safe_load((tmp_path / run / "config.yaml").read_text())["seed_everything"]
                  for run in runs) == [0, 1, 2]
    refused = run_cli(*args, "--model.total_timesteps=1", config="configs/ppo_cartpole.yaml", root=tmp_path)
    assert refused.returncode == 2 and sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == runs
    deep = tmp_path / "deep"
    refused = run_cli(*args, "--model.total_timesteps=1", config="configs/ppo_cartpole.yaml", root=deep / "x" / "y")
    assert refused.returncode == 2 and not deep.exists()  # the folders it made for itself are gone again
    (tmp_path / "run_4").write_text("a file where the next run folder would go")
    ok = run_cli(*args, config="configs/ppo_cartpole.yaml", root=tmp_path)
    assert ok.returncode == 0 and (tmp_path / "run_5" / "config.yaml").is_file()


def test_without_a_seed_each_run_draws_its_own_and_keeps_it(tmp_path):
    seeds = []
    for _ in range(2):
        cmd = [sys.executable, "-m", "lightning_pg", "fit", "--config", str(REPO / "configs/ppo_cartpole.yaml"),
               "--trainer.default_root_dir", str(tmp_path), "--trainer.logger=false", "--model.total_timesteps=256",
               "--model.eval_every=-1"]
        result = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        saved = yaml.safe_load((run_folder(tmp_path) / "config.yaml").read_text())["seed_everything"]
        assert f"; seed {saved};" in result.stderr and "No seed found" not in result.stderr
        seeds.append(saved)
    assert seeds[0] != seeds[1]
    # the saved seed repeats the run: the same first weights update as with --seed_everything given
    again = run_cli("--model.total_timesteps=256", "--model.eval_every=-1", f"--seed_everything={seeds[1]}",
                    config="configs/ppo_cartpole.yaml", root=tmp_path / "again")
    assert again.returncode == 0, again.stderr[-2000:]
    first = ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")["state_dict"]
    repeat = ckpt_state(run_folder(tmp_path / "again") / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.equal(first[k], repeat[k]) for k in first)


def test_the_console_is_a_start_summary_the_progress_and_an_end_summary(tmp_path):
    env = cli_env()
    env.pop("WANDB_MODE", None)
    result = run_cli("--model.total_timesteps=4096", "--model.eval_every=2048", config="configs/ppo_cartpole.yaml",
                     root=tmp_path, logger=None, env=env)  # the config as a user runs it: W&B offline included
    assert result.returncode == 0, result.stderr[-2000:]
    # stdout is a pipe here, not a terminal: the bar's carriage-return frames give way to plain lines (one per
    # 30 s, and one at the end)
    assert "\r" not in result.stdout + result.stderr
    (progress,) = result.stdout.splitlines()
    assert re.fullmatch(r"PPO: 4,096/4,096 env steps \(100%\), \d+ env steps/s, return [\d.]+, eval [\d.]+", progress)
    lines = result.stderr.splitlines()
    run = run_folder(tmp_path)
    (wandb_run,) = glob.glob(f"{run}/wandb/offline-run-*")
    assert lines == [
        "lightning_pg: PPO on CartPole-v1: observations Box (4,) float32, actions Discrete(2); 9,155 parameters; "
        "cpu, precision 32-true; seed 0; 4,096 env steps",
        f"lightning_pg: run folder {run}",
        lines[2],  # the fit's own summary, checked below
        f"lightning_pg: checkpoints {run}/checkpoints/last.ckpt and {run}/checkpoints/best.ckpt",
        f"lightning_pg: W&B run {wandb_run} (upload it with `wandb sync {wandb_run}`)",
        f"lightning_pg: metrics {run}/metrics.csv",
    ], "\n".join(lines)
    assert re.fullmatch(r"PPO: 4096 env steps \(4096 in this fit\) in [\d.]+ s of fit, \d+ env steps/s; last eval "
                        r"return [\d.]+ ± [\d.]+", lines[2])
