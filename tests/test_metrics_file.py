"""Every fit writes ``metrics.csv`` into its run folder, whatever the logger; a resumed run continues it."""
import csv

from tests.helpers import ckpt_state, run_cli, run_folder


def read(path):
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return reader.fieldnames, list(reader)


def test_every_fit_writes_metrics_csv_and_a_resume_continues_it_from_its_checkpoint(tmp_path):
    first = run_cli("--model.total_timesteps=3000", "--model.eval_every=2000", root=tmp_path)  # logger off
    assert first.returncode == 0, first.stderr
    run = run_folder(tmp_path)
    path = run / "metrics.csv"
    assert f"metrics {path}" in first.stderr  # the end summary names it
    header, rows = read(path)
    assert header[:5] == ["time/env_steps", "train/episode_return", "train/episode_length", "eval/return_mean",
                          "eval/return_std"]
    assert {"loss/policy", "loss/value", "time/sps"} <= set(header)
    done = ckpt_state(run / "checkpoints" / "last.ckpt")["lightning_pg"]["num_timesteps"]
    steps = [int(r["time/env_steps"]) for r in rows]
    assert steps == sorted(steps) and steps[-1] == done
    evals = [float(r["eval/return_mean"]) for r in rows if r["eval/return_mean"]]
    assert len(evals) == 2 and all(e >= 8 for e in evals)  # at 2000 env steps and at the end; CartPole's floor
    assert all(float(r["train/episode_return"]) > 0 for r in rows if r["train/episode_return"])

    # rows a stopped run logged after its last checkpoint: the resumed run starts again from that checkpoint
    with open(path, "a", newline="") as file:
        csv.DictWriter(file, header).writerow({"time/env_steps": done + 500, "train/episode_return": 1234.0})
    second = run_cli("--model.total_timesteps=6000", "--ckpt_path=last", root=tmp_path)
    assert second.returncode == 0, second.stderr
    assert run_folder(tmp_path) == run  # the same run goes on, in the same file
    _, resumed = read(path)
    assert resumed[: len(rows)] == rows  # the first fit's rows are kept as they were
    later = [int(r["time/env_steps"]) for r in resumed[len(rows):]]
    assert later and later[0] > done and later == sorted(later) and later[-1] >= 6000
    assert not any(r["train/episode_return"] == "1234.0" for r in resumed)


def test_a_fit_from_best_starts_a_new_run_and_leaves_the_first_one_as_it_was(tmp_path):
    first = run_cli("--model.total_timesteps=3000", "--model.eval_every=1000", root=tmp_path)
    assert first.returncode == 0, first.stderr
    run_1 = tmp_path / "run_1"
    before = {name: (run_1 / name).read_bytes() for name in ("checkpoints/last.ckpt", "metrics.csv")}
    best = ckpt_state(run_1 / "checkpoints" / "best.ckpt")["lightning_pg"]["num_timesteps"]

    second = run_cli("--model.total_timesteps=6000", "--ckpt_path=best", root=tmp_path)
    assert second.returncode == 0, second.stderr
    assert run_folder(tmp_path) == tmp_path / "run_2"
    assert {name: (run_1 / name).read_bytes() for name in before} == before
    _, rows = read(tmp_path / "run_2" / "metrics.csv")
    assert int(rows[0]["time/env_steps"]) > best  # its own file, from the checkpoint's step on


def log(logger, **metrics):
    logger.log_metrics(metrics, step=metrics.get("time/env_steps", 0))


def test_resume_keeps_the_rows_before_the_checkpoint_and_drops_every_row_after_it(tmp_path):
    from lightning_pg.loggers import MetricsCSV

    first = MetricsCSV(str(tmp_path))
    log(first, **{"time/env_steps": 1000, "loss/policy": 0.5})
    first.log_metrics({"lr-Adam": 0.1}, step=7)  # a Lightning callback's row: no env step
    log(first, **{"time/env_steps": 2000, "loss/policy": 0.25})
    first.log_metrics({"lr-Adam": 0.2}, step=14)

    resumed = MetricsCSV(str(tmp_path), resume_at=1000)
    assert read(tmp_path / "metrics.csv")[1][-1]["lr-Adam"] == "0.2"  # untouched until the run logs
    log(resumed, **{"time/env_steps": 1100, "loss/policy": 0.375})
    header, rows = read(tmp_path / "metrics.csv")
    assert header == ["time/env_steps", "loss/policy", "lr-Adam", "step"]
    assert [(r["time/env_steps"], r["lr-Adam"]) for r in rows] == [("1000", ""), ("", "0.1"), ("1100", "")]

    fresh = MetricsCSV(str(tmp_path))  # a new run: a new file
    log(fresh, **{"time/env_steps": 5, "eval/return_mean": 9.0})
    assert read(tmp_path / "metrics.csv") == (["time/env_steps", "eval/return_mean"],
                                               [{"time/env_steps": "5", "eval/return_mean": "9.0"}])
