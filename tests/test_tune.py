"""``python -m lightning_pg tune``: the search space section, pruning on evaluations, the best config that fit
runs, resuming a study from its storage (real Optuna sqlite storages, fits in real subprocesses)."""
import csv
import os
import re
import shlex
import subprocess
import sys
from types import SimpleNamespace

import optuna
import pytest
import torch
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

import lightning_pg as lp
from lightning_pg.commands import tune
from lightning_pg.errors import ConfigError
from tests.helpers import REPO, cli_env, run_cli, run_folder

ACCEPTED = ["batch_size", "gamma", "learning_rate", "n_steps", "network"]


def test_tune_section_known_answers():
    space = tune.parse_space({
        "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
        "model.gamma": {"type": "float", "low": 0.9, "high": 0.99, "step": 0.03},  # the dotted form is the same name
        "batch_size": {"type": "int", "low": 32, "high": 256, "step": 32},
        "n_steps": [16, 32, 64],  # a plain list: the choices
        "network": {"type": "categorical", "choices": [[64], [64, 64]]},
    }, ACCEPTED, "cfg.yaml")
    assert space["learning_rate"].distribution == FloatDistribution(1e-5, 1e-2, log=True)
    assert space["gamma"].distribution == FloatDistribution(0.9, 0.99, step=0.03)
    assert space["batch_size"].distribution == IntDistribution(32, 256, step=32)
    assert space["n_steps"].distribution == CategoricalDistribution([16, 32, 64])
    # lists are stored by Optuna as their JSON text and come back as lists
    assert space["network"].distribution == CategoricalDistribution(["[64]", "[64, 64]"])
    assert space["network"].value("[64, 64]") == [64, 64] and space["n_steps"].value(32) == 32
    assert space["learning_rate"].describe() == "float [1e-05, 0.01] log"
    assert space["batch_size"].describe() == "int [32, 256] step 32"


@pytest.mark.parametrize("section, message", [
    ({"learning_rat": [1e-3]}, r"names 'learning_rat', which is not a hyperparameter .* use one of its names: "
                               r"batch_size, gamma, learning_rate, n_steps, network\."),
    ({"total_timesteps": [1000]}, r"'total_timesteps', which sets the task or how a trial is scored"),
    ({"gamma": {"type": "normal", "low": 0.9}}, r"'gamma' is .*: not a distribution\. Fix: write a distribution: "
                                                r"\{type: float"),
    ({"gamma": {"type": "float", "low": 0.99, "high": 0.9}}, r"low must be below high"),
    ({"learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}}, r"a log scale needs low > 0"),
    ({"n_steps": {"type": "int", "low": 8, "high": 64.5}}, r"low and high must be integers"),
    ({"n_steps": {"type": "int", "low": 8, "high": 64, "choices": [8]}}, r"int takes high, log, low, step, not "
                                                                        r"choices\. Fix"),
    ({"n_steps": {"type": "categorical", "choices": []}}, r"choices must be a non-empty list"),
    ({"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True, "step": 1e-5}},
     r"`step` is not supported when `log` is true\. Fix"),
    ({"n_steps": {"type": "int", "low": 8, "high": 64, "step": 0}}, r"`step > 0` must hold, but got step=0\. Fix"),
    ([], r"must map hyperparameter names to distributions"),
])
def test_tune_section_mistakes_are_one_paragraph(section, message):
    with pytest.raises(ConfigError, match=message) as error:
        tune.parse_space(section, ACCEPTED, "cfg.yaml")
    assert "\n" not in str(error.value) and "Fix:" in str(error.value)


def test_default_space_and_repairs():
    model = lp.PPO(env_id="CartPole-v1", num_envs=8, n_steps=16, batch_size=128, total_timesteps=20_000)
    algorithm, section = tune.default_space(model, 20_000, eval_every=2_000)
    # rollouts of at most one evaluation interval: n_steps * 8 envs <= 2,000
    assert algorithm == "PPO" and section["n_steps"] == [8, 16, 32, 64, 128]
    space = tune.parse_space(section, sorted(k for k in model.hparams if k not in tune.NOT_SEARCHED), "x")
    assert set(space) == set(tune.DEFAULT_SPACES["PPO"])
    base = dict(model.hparams)
    # batch_size: the largest divisor of the rollout n_steps * num_envs not above it
    assert tune.repaired({"n_steps": 16, "batch_size": 512}, base, lp.PPO) == {"n_steps": 16, "batch_size": 128}
    assert tune.repaired({"n_steps": 12, "batch_size": 64}, base, lp.PPO)["batch_size"] == 48  # rollout 96
    assert tune.repaired({"learning_rate": 1e-3}, base, lp.PPO) == {"learning_rate": 1e-3}
    assert tune.repaired({"batch_size": 64, "learning_starts": 10}, base, lp.SAC)["batch_size"] == 64


def test_evaluations_reach_the_pruner_at_the_interval_multiples():
    reports = []
    trial = SimpleNamespace(report=lambda value, step: reports.append((step, value)), should_prune=lambda: True)
    pruning = tune._Pruning(trial, every=1000, total=4000)
    trainer, module = SimpleNamespace(should_stop=False), SimpleNamespace(evaluated_at=-1, last_eval=None)
    pruning.on_train_batch_end(trainer, module)  # no evaluation yet
    module.evaluated_at, module.last_eval = 4096, (50.0, 1.0)  # the last one, past the budget: the total, no prune
    pruning.on_train_batch_end(trainer, module)
    assert reports == [(4000, 50.0)] and not trainer.should_stop
    pruning = tune._Pruning(trial, every=1000, total=4000)
    module.evaluated_at, module.last_eval = 1024, (20.0, 1.0)  # crossed 1,000: compared with others at 1,000
    pruning.on_train_batch_end(trainer, module)
    pruning.on_train_batch_end(trainer, module)  # the same evaluation, seen at the next batch end: once
    assert reports[1:] == [(1000, 20.0)] and trainer.should_stop and pruning.pruned == (1000, 20.0)


def test_a_trial_leaves_torch_threads_and_the_environment_as_they_were(monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.setenv("LIGHTNING_PG_TUNE_TEST", "before")
    with tune._isolated():  # what a fit sets: torch_threads, the run folder and seed variables
        torch.set_num_threads(threads + 1)
        os.environ["LIGHTNING_PG_TUNE_TEST"], os.environ["LIGHTNING_PG_TUNE_TEST_NEW"] = "during", "during"
    assert torch.get_num_threads() == threads and os.environ["LIGHTNING_PG_TUNE_TEST"] == "before"
    assert "LIGHTNING_PG_TUNE_TEST_NEW" not in os.environ


CONFIG = {
    "model": {"class_path": "lightning_pg.PPO", "init_args": {
        "env_id": "CartPole-v1", "num_envs": 8, "total_timesteps": 100_000, "n_steps": 32, "batch_size": 256,
        "n_epochs": 20, "gae_lambda": 0.8, "gamma": 0.98, "learning_rate": 0.001, "eval_episodes": 5}},
    "torch_threads": 1,
    "trainer": {"accelerator": "cpu"},
}


def tune_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "lightning_pg", "tune", *map(str, args)], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def evaluations(run):
    with open(run / "metrics.csv") as file:
        return [(row["time/env_steps"], row["eval/return_mean"]) for row in csv.DictReader(file)
                if row["eval/return_mean"]]


def test_tune_writes_a_best_config_that_fit_runs(tmp_path):
    config = tmp_path / "cartpole.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "tune": {
        "learning_rate": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True},
        "n_steps": [16, 32],
        "batch_size": [64, 512],  # 512 > the rollout of 16 * 8 or 32 * 8 env steps: repaired, never failing
        "network": [[32], [64, 64]]}}))
    root = tmp_path / "tune"
    result = tune_cli("--config", config, "--n_trials", 3, "--n_evaluations", 4, "--model.total_timesteps", 2048,
                      "--trainer.default_root_dir", root, "--seed_everything", 0)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("trial ")]
    assert len(lines) == 3 and all(re.search(r" -> [\d.]+, [\d.]+ s$", line) for line in lines), result.stdout
    assert "Seed set" not in result.stdout + result.stderr and "PPO:" not in result.stdout  # the fits' consoles
    study = optuna.load_study(study_name="cartpole", storage=f"sqlite:///{root / 'study.db'}")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for trial in trials:
        hyper = trial.user_attrs["hyperparameters"]
        assert hyper["batch_size"] <= hyper["n_steps"] * 8 and "PPO:" in (root / f"trial_{trial.number}" /
                                                                          "console.log").read_text()
        # the objective: the last evaluation of the trial's own run, at the end of its 2,048 env steps
        rows = (run_folder(root / f"trial_{trial.number}") / "metrics.csv").read_text().splitlines()
        header, last = rows[0].split(","), rows[-1].split(",")
        assert int(float(last[0])) == 2048 and float(last[header.index("eval/return_mean")]) == trial.value
    best = yaml.safe_load((root / "best.yaml").read_text())
    assert best["model"]["init_args"] == {**CONFIG["model"]["init_args"], **study.best_trial.user_attrs[
        "hyperparameters"]} and "tune" in best  # kept: best.yaml can be tuned again
    assert f"best: trial {study.best_trial.number}, return {study.best_value:.1f}" in result.stdout

    # a trial run after others in the tune process is the fit its console names, alone in a process of its own
    command = shlex.split((root / "trial_2" / "console.log").read_text().splitlines()[1])
    alone = tmp_path / "alone"
    command = [a if not a.startswith("--trainer.default_root_dir=") else f"--trainer.default_root_dir={alone}"
               for a in command[command.index("lightning_pg") + 1:]]
    fit = subprocess.run([sys.executable, "-m", "lightning_pg", *command], cwd=REPO, env=cli_env(),
                         capture_output=True, text=True, timeout=300)
    assert fit.returncode == 0, fit.stderr
    assert len(evaluations(alone_run := run_folder(alone))) == 4  # every 2,048 / 4 env steps
    assert evaluations(alone_run) == evaluations(run_folder(root / "trial_2"))

    fit = run_cli("--model.total_timesteps=2048", config=root / "best.yaml", root=tmp_path / "fit")
    assert fit.returncode == 0, fit.stderr
    assert yaml.safe_load((run_folder(tmp_path / "fit") / "config.yaml").read_text())["model"]["init_args"][
        "network"] == study.best_trial.user_attrs["hyperparameters"]["network"]


def test_tune_prunes_requeues_a_killed_trial_and_resumes(tmp_path):
    config = tmp_path / "cartpole.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "tune": {
        "learning_rate": {"type": "float", "low": 1e-8, "high": 1e-2, "log": True}}}))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    # what a killed search leaves: a trial RUNNING with no process behind it
    cut_off = study.ask(fixed_distributions={"learning_rate": FloatDistribution(1e-8, 1e-2, log=True)})
    study.enqueue_trial({"learning_rate": 1e-3})  # learns
    study.enqueue_trial({"learning_rate": 1e-8})  # stays the initial policy: behind the first at every evaluation
    args = ["--config", config, "--storage", storage, "--study_name", "s", "--n_startup_trials", 1, "--n_evaluations",
            6, "--model.total_timesteps", 3072, "--trainer.default_root_dir", tmp_path / "tune", "--seed_everything", 0]
    result = tune_cli(*args, "--n_trials", 3)
    assert result.returncode == 0, result.stderr
    assert "0 of 3 trials done (trial 0 was cut off: queued to run again)" in result.stdout
    trials = optuna.load_study(study_name="s", storage=storage).get_trials()
    assert [t.state for t in trials[:3]] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.PRUNED]
    assert trials[0].user_attrs["interrupted"] and trials[3].params == cut_off.params  # run again as trial 3
    assert trials[3].user_attrs["requeued_from"] == 0 and trials[3].state.is_finished()
    # pruned at an evaluation after the warm-up third of the budget, and its fit stopped there
    pruned_at = max(trials[2].intermediate_values)
    assert 3072 // 3 <= pruned_at < 3072 and trials[2].intermediate_values[pruned_at] < \
        trials[1].intermediate_values[pruned_at]
    assert f"trial 2: learning_rate=1e-08 -> pruned at {pruned_at:,} env steps" in result.stdout
    rows = (run_folder(tmp_path / "tune" / "trial_2") / "metrics.csv").read_text().splitlines()
    assert int(float(rows[-1].split(",")[0])) < 3072

    # the same command with --n_trials 4: the study holds 3 counted trials, so one more runs
    result = tune_cli(*args, "--n_trials", 4)
    assert result.returncode == 0, result.stderr
    assert "3 of 4 trials done" in result.stdout and len(re.findall(r"^trial ", result.stdout, re.M)) == 1
    assert len(optuna.load_study(study_name="s", storage=storage).get_trials()) == 5


def test_only_this_machines_cut_off_trials_are_requeued(monkeypatch):
    """A trial RUNNING on another machine (a shared server database) is its own, whether its process lives is
    for that machine to tell; here only the trials of a process that is gone are cut off."""
    monkeypatch.setattr(tune.socket, "gethostname", lambda: "here")
    study = optuna.create_study(direction="maximize")
    owners = {"elsewhere": ["there", 1], "alive here": ["here", os.getppid()], "gone here": ["here", 2**22 + 7]}
    numbers = {}
    for name, owner in owners.items():
        trial = study.ask({"x": FloatDistribution(0, 1)})
        trial.set_user_attr("owner", owner)
        numbers[name] = trial.number
    assert tune.requeue_cut_off(study) == [numbers["gone here"]]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[numbers["elsewhere"]] == states[numbers["alive here"]] == TrialState.RUNNING
    assert states[numbers["gone here"]] == TrialState.FAIL


def test_each_trial_logs_to_a_wandb_run_of_its_own(tmp_path):
    """In one process, Lightning's WandbLogger would reuse the run still open from the previous trial."""
    root = tmp_path / "tune"
    config = str(REPO / "configs/ppo_cartpole.yaml")
    result = subprocess.run([sys.executable, "-m", "lightning_pg", "tune", "--config", config, "--n_trials", "2",
                             "--model.total_timesteps", "1024", "--trainer.logger", "true",
                             "--trainer.default_root_dir", str(root), "--seed_everything", "0"],
                            cwd=REPO, env=cli_env(WANDB_MODE="offline"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for trial in (0, 1):
        assert len(list((run_folder(root / f"trial_{trial}") / "wandb").glob("offline-run-*"))) == 1, trial


def test_trials_the_algorithm_refuses_fail_and_the_search_goes_on(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "tune": {"clip_range": [-0.1, -0.2]}}))
    with pytest.raises(ConfigError, match=r"No trial of the study 'bad' completed: 2 failed, 0 pruned; the last "
                                          r"failure: Invalid hyperparameter clip_range=-0\.[12]: it must be > 0"):
        tune.main(["--config", str(config), "--n_trials", "2", "--model.total_timesteps", "2048",
                   "--trainer.default_root_dir", str(tmp_path / "tune")])
    trials = optuna.load_study(study_name="bad", storage=f"sqlite:///{tmp_path / 'tune' / 'study.db'}").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 2 and all("clip_range" in t.user_attrs["error"]
                                                                      for t in trials)
    console = (tmp_path / "tune" / "trial_1" / "console.log").read_text()
    assert "lightning_pg: error: Invalid hyperparameter clip_range=-0." in console  # its console has it too


@pytest.mark.parametrize("args, message", [
    (["--n_trials", "0"], r"--n_trials 0: it must be an integer >= 1"),
    (["--n_trials", "2", "--storage", "sqlite:////no/such/folder/x.db"], r"--storage sqlite:////no/such/folder/x\.db "
                                                                          r"cannot be opened \(OperationalError"),
    (["--n_trials", "2", "--model.eval_every", "-1"], r"turns evaluation off"),
    (["--n_trials", "2", "--ckpt_path", "last"], r"every trial trains from scratch"),
    # a rank Lightning launched would rerun the whole search, and both would wait in a collective for ever
    (["--n_trials", "2", "--trainer.devices", "2", "--trainer.strategy", "ddp"], r"ask for 2 processes \(DDP\)"),
])
def test_tune_bad_input(args, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        tune.main(["--config", str(REPO / "configs/ppo_cartpole.yaml"), *args,
                   "--trainer.default_root_dir", str(tmp_path)])


def test_tune_bad_input_exits_2_with_one_paragraph(capsys):
    from lightning_pg import cli

    with pytest.raises(SystemExit) as exit:
        cli.main(["tune", "--config", "configs/ppo_cartpole.yaml", "--n_trials", "2", "--sampler", "grid"])
    assert exit.value.code == 2
    assert re.fullmatch(r"lightning_pg: error: python -m lightning_pg tune: argument --sampler: invalid choice: "
                        r"'grid' \(choose from '?tpe'?, '?random'?\)\. Fix: .*\n", capsys.readouterr().err)
