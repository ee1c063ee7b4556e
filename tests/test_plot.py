"""``python -m lightning_pg plot``: learning curves of real runs (3 seeds trained through the CLI) to a PNG, the
seed statistics checked against the runs' metrics.csv and on hand-made files with known answers, and the
one-paragraph errors."""
import csv
import subprocess
import sys

import numpy as np
import pytest
import yaml

from lightning_pg.commands import plot
from lightning_pg.errors import ConfigError
from tests.helpers import REPO, cli_args, cli_env

SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    """A root holding run_1..run_3: ppo_cartpole, seeds 1-3, evaluated every 1,024 of 4,096 env steps."""
    root = tmp_path_factory.mktemp("ppo_cartpole")
    procs = [subprocess.Popen(cli_args("--model.total_timesteps=4096", "--model.eval_every=1024",
                                       f"--seed_everything={seed}", config="configs/ppo_cartpole.yaml", root=root),
                              cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for seed in SEEDS]  # side by side: they claim run_1..run_3 in some order
    for proc in procs:
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out
    return root


def eval_columns(run):
    with open(run / "metrics.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row["eval/return_mean"]]
    return [float(r["time/env_steps"]) for r in rows], [float(r["eval/return_mean"]) for r in rows]


def test_plot_draws_three_seeds_of_a_config_as_one_mean_and_band(three_seeds, tmp_path):
    output = tmp_path / "figures" / "curves.png"
    result = subprocess.run([sys.executable, "-m", "lightning_pg", "plot", str(three_seeds), "--output", str(output),
                             "--size", "800x500"], cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"lightning_pg: plot {output}" in result.stdout
    from matplotlib.image import imread

    image = imread(output)
    assert image.shape[:2] == (500, 800)
    assert image[..., :3].std() > 0.05  # lines and a band, not a blank canvas

    runs = plot.run_folders(str(three_seeds))
    assert [r.name for r in runs] == ["run_1", "run_2", "run_3"]
    groups = plot.group_runs(runs)
    assert list(groups) == ["PPO CartPole-v1"] and groups["PPO CartPole-v1"] == runs  # the seeds: one config
    band = plot.seed_band([plot.read_curve(run, "eval/return_mean") for run in runs])
    columns = [eval_columns(run) for run in runs]
    assert all(steps == [1024, 2048, 3072, 4096] for steps, _ in columns)
    table = np.array([values for _, values in columns])
    assert len({tuple(row) for row in table}) == 3  # the seeds learned differently: the band has a width
    np.testing.assert_allclose(band.steps, [1024, 2048, 3072, 4096])
    np.testing.assert_allclose(band.mean, table.mean(axis=0))
    np.testing.assert_allclose(band.low, table.min(axis=0))
    np.testing.assert_allclose(band.high, table.max(axis=0))
    assert f"PPO CartPole-v1: 3 seed(s), eval/return_mean {table[:, -1].mean():.1f}" in result.stdout

    # one run folder alone, and another metric: a band of one seed is its curve
    single = tmp_path / "one.png"
    plot.main([str(runs[0]), "--output", str(single), "--metric", "train/episode_return"])
    assert imread(single).shape[:2] == (600, 960)  # the default size


def write_run(folder, rows, seed, learning_rate=0.001):
    folder.mkdir(parents=True)
    config = {"seed_everything": seed, "trainer": {"default_root_dir": str(folder), "logger": False},
              "model": {"class_path": "lightning_pg.PPO",
                        "init_args": {"env_id": "CartPole-v1", "learning_rate": learning_rate}}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    with open(folder / "metrics.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, ["time/env_steps", "train/episode_return", "eval/return_mean"])
        writer.writeheader()
        writer.writerows(rows)


def test_seeds_evaluated_at_different_steps_are_interpolated_onto_the_union_of_their_steps(tmp_path):
    # seed 1: 0, 10, 20 at steps 0, 100, 200; seed 2: 5 throughout, at steps 50, 150, 250; training rows between
    write_run(tmp_path / "run_1", [{"time/env_steps": 0, "eval/return_mean": 0},
                                   {"time/env_steps": 60, "train/episode_return": 99},
                                   {"time/env_steps": 100, "eval/return_mean": 10},
                                   {"time/env_steps": 200, "eval/return_mean": 20}], seed=1)
    write_run(tmp_path / "run_2", [{"time/env_steps": 50, "eval/return_mean": 5},
                                   {"time/env_steps": 150, "eval/return_mean": 5},
                                   {"time/env_steps": 250, "eval/return_mean": 5}], seed=2)
    write_run(tmp_path / "run_3", [{"time/env_steps": 100, "eval/return_mean": 7}], seed=1, learning_rate=0.0003)
    runs = plot.run_folders(str(tmp_path))
    groups = plot.group_runs(runs)
    assert groups == {"PPO CartPole-v1 (learning_rate=0.001)": runs[:2],
                      "PPO CartPole-v1 (learning_rate=0.0003)": runs[2:]}
    curves = [plot.read_curve(run, "eval/return_mean") for run in runs[:2]]
    band = plot.seed_band(curves)
    # the range both cover is 50..200; seed 1 interpolated there: 5, 10, 15, 20; seed 2: 5, 5, 5, 5
    np.testing.assert_allclose(band.steps, [50, 100, 150, 200])
    np.testing.assert_allclose(band.mean, [5, 7.5, 10, 12.5])
    np.testing.assert_allclose(band.low, [5, 5, 5, 5])
    np.testing.assert_allclose(band.high, [5, 10, 15, 20])
    std = plot.seed_band(curves, band="std")
    spread = np.array([0, 5, 10, 15]) / np.sqrt(2)  # the sample standard deviation of two: |a - b| / sqrt(2)
    np.testing.assert_allclose(std.low, np.array([5, 7.5, 10, 12.5]) - spread)
    np.testing.assert_allclose(std.high, np.array([5, 7.5, 10, 12.5]) + spread)

    output = tmp_path / "known.png"
    plot.main([str(tmp_path), "--output", str(output), "--band", "std"])
    assert output.stat().st_size > 1000


def test_bad_input_is_one_paragraph_naming_the_fix(tmp_path, capsys):
    write_run(tmp_path / "root" / "run_1", [{"time/env_steps": 100, "train/episode_return": 3}], seed=0)
    cases = {
        "no such folder": [str(tmp_path / "nowhere")],
        "neither a run folder": [str(tmp_path)],
        r"its metrics: train/episode_return\)": [str(tmp_path / "root")],  # no eval/return_mean: what there is
        "WIDTHxHEIGHT": [str(tmp_path / "root"), "--metric", "train/episode_return", "--size", "big"],
        "end the name with .png": [str(tmp_path / "root"), "--output", "x.jpg"],
    }
    for message, argv in cases.items():
        with pytest.raises(ConfigError, match=message):
            plot.main(argv)

    wandb_only = tmp_path / "wandb_only"
    (wandb_only / "wandb" / "offline-run-20250101_000000-abc").mkdir(parents=True)
    (wandb_only / "config.yaml").write_text("seed_everything: 0\n")
    with pytest.raises(ConfigError, match="has no metrics.csv.*W&B offline run .*wandb sync"):
        plot.main([str(wandb_only)])

    # through the CLI: one paragraph on stderr, exit status 2, no PNG
    result = subprocess.run([sys.executable, "-m", "lightning_pg", "plot", str(tmp_path / "root"), "--output",
                             str(tmp_path / "no.png")], cwd=REPO, env=cli_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("lightning_pg: error: ")
    assert "eval/return_mean" in result.stderr and not (tmp_path / "no.png").exists()
