"""Shared test helpers: run the CLI in a real subprocess, read checkpoints, CSV metrics and W&B run files."""
import csv
import glob
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def cli_env(**extra):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **extra}
    env.pop("LIGHTNING_PG_DEBUG", None)
    return env


def cli_args(*args, config="configs/reinforce_cartpole.yaml", root=None, logger="false", subcommand="fit"):
    cmd = [sys.executable, "-m", "lightning_pg", subcommand]
    if not any(str(a).startswith("--seed_everything") for a in args):
        args = (*args, "--seed_everything=0")  # the tests' runs are repeatable; a run's own seed is drawn fresh
    if config:
        cmd += ["--config", str(REPO / config)]
    if root is not None:
        cmd += ["--trainer.default_root_dir", str(root)]
    if logger is not None:
        cmd += [f"--trainer.logger={logger}"]
    return cmd + [str(a) for a in args]


def run_cli(*args, timeout=300, env=None, **kwargs):
    return subprocess.run(
        cli_args(*args, **kwargs), cwd=REPO, env=env or cli_env(), capture_output=True, text=True, timeout=timeout
    )


def csv_logger(root):
    return f'{{"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {{"save_dir": "{root}", "name": "csv"}}}}'


def csv_rows(root):
    rows = []
    for path in sorted(glob.glob(f"{root}/csv/version_*/metrics.csv")):
        with open(path) as f:
            rows.append([{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)])
    return rows  # one list of rows per run (version)


def ckpt_state(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def data_state(state):
    """The train iterable's part of a checkpoint (RNGs, envs, replay buffer), saved by Lightning's fit loop."""
    return state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]


def _wandb_file_records(path):
    """The protobuf records of an offline W&B run file (LevelDB-log framing)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf = Path(path).read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind not in (1, 4):  # FIRST/MIDDLE fragments of a record
            continue
        record = pb.Record()
        record.ParseFromString(buf)
        buf = b""
        yield record


def _items(items):
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def wandb_records(path):
    """History rows and config keys of an offline W&B run file."""
    history, config = [], {}
    for record in _wandb_file_records(path):
        kind_name = record.WhichOneof("record_type")
        if kind_name == "history":
            history.append(_items(record.history.item))
        elif kind_name == "config":
            config.update(_items(record.config.update))
    return history, config


def wandb_summary(path):
    """The run's summary as its offline file holds it (every summary update, the later ones winning)."""
    summary = {}
    for record in _wandb_file_records(path):
        if record.WhichOneof("record_type") == "summary":
            summary.update(_items(record.summary.update))
    return summary


def run_folder(root):
    """The newest run folder (``run_N``) the CLI made under ``root``; ``root/run_1`` while there is none."""
    runs = sorted(Path(root).glob("run_*"), key=lambda p: int(p.name.split("_")[1]))
    return runs[-1] if runs else Path(root) / "run_1"


def children(pid):
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    if int(file.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for_children(proc, count, timeout=120):
    """``proc``'s child processes once it has ``count`` of them, after a second more of training."""
    deadline, seen = time.time() + timeout, []
    while time.time() < deadline and proc.poll() is None and len(seen) < count:
        seen = sorted(set(seen) | set(children(proc.pid)))
        time.sleep(0.05)
    time.sleep(1.0)
    return sorted(set(seen) | set(children(proc.pid)))


def interrupt_like_a_terminal(proc, signum, timeout=120):
    """``signum`` to ``proc`` and its children, as a terminal's Ctrl+C reaches the whole process group; returns
    its stderr once it has exited."""
    proc.send_signal(signum)
    for child in children(proc.pid):
        os.kill(child, signum)
    return proc.communicate(timeout=timeout)[1]
