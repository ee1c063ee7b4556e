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
