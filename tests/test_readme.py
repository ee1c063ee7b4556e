"""The README works as written: every command and code block in it runs, top to bottom, as a new user would run
them in one folder, with the budgets cut short.

- bash blocks: each command runs in a shell. ``python -m lightning_pg fit|validate|test`` gets a short budget
  appended (later fits a larger one, so `--ckpt_path last` has steps left to take), ``tune`` two short trials;
  ``wandb sync`` runs as
  ``--dry-run`` (no network here); ``WANDB_MODE=online`` meets a server that refuses at once.
- The install one-liners: their set-up steps must be the ones `.ci/run` takes from nothing (it installs every
  CI run), and the command they end with runs here (the test command is checked to be `.ci/run`'s last line).
- python blocks run as scripts in the same folder, as written.
- The console sample has the shape of the default job's real console.
"""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, cli_env

BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
README = (REPO / "README.md").read_text()
BLOCKS = [(README[: m.start()].count("\n") + 1, m.group(1), m.group(2)) for m in BLOCK.finditer(README)]
CI_STEPS = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def commands(text):
    """The block's commands: continuation lines joined, comments dropped."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """One folder for the whole README, with the repository's configs and examples, as in a clone."""
    folder = tmp_path_factory.mktemp("readme")
    for name in ("configs", "examples"):
        (folder / name).symlink_to(REPO / name)
    return {"folder": folder, "fits": 0, "outputs": []}


def shell(session, command, **env):
    environment = cli_env(**env)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"  # this venv's python
    result = subprocess.run(["bash", "-c", command], cwd=session["folder"], env=environment, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    session["outputs"].append(result.stdout + result.stderr)
    return result


def run_command(session, command):
    words = shlex.split(command)
    env = {}
    while words and re.fullmatch(r"\w+=.*", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    if env.get("WANDB_MODE") == "online":  # no network here: a server that refuses at once, short attempts
        env.update(WANDB_BASE_URL="http://127.0.0.1:9", WANDB_INIT_TIMEOUT="2", WANDB_API_KEY="x" * 40)
    if words[:2] == ["wandb", "sync"]:
        result = shell(session, shlex.join(["wandb", "sync", "--dry-run", *words[2:]]).replace("'", ""), **env)
        assert "Would sync 1 run" in result.stdout + result.stderr, result.stderr
        return
    if words[:3] == ["python", "-m", "lightning_pg"] and words[3] in ("fit", "validate", "test") and not any(
            w == "--print_config" or w.endswith(".help") for w in words):
        if words[3] == "fit":
            session["fits"] += 1
            words += [f"--model.total_timesteps={1024 * session['fits']}"]
        words += ["--model.eval_episodes=2"]
    if words[:4] == ["python", "-m", "lightning_pg", "tune"]:  # two short trials (the last option given wins)
        words += ["--n_trials=2", "--model.total_timesteps=2048", "--model.eval_episodes=2"]
    shell(session, shlex.join(words), **env)


def test_readme_runs_as_written_top_to_bottom(session):
    """One test, not one per block: the blocks build on each other (one folder, earlier runs), so they must run
    in order in one process, which parallel test workers would not guarantee."""
    for line, language, text in BLOCKS:
        try:
            run_block(session, line, language, text)
        except AssertionError as exc:
            raise AssertionError(f"README.md:{line}: {exc}") from exc


def run_block(session, line, language, text):
    if language == "bash":
        for command in commands(text):
            if "pip install" in command:
                *setup, final = [part.strip() for part in command.split("&&")]
                check_set_up_is_what_ci_installs(setup)
                if final == "python -m pytest -q":
                    assert CI_STEPS[-1] == final  # CI runs exactly this, after the same install
                    continue
                command = final
            run_command(session, command)
    elif language == "python":
        script = session["folder"] / f"readme_{line}.py"
        script.write_text(text)
        shell(session, shlex.join([sys.executable, str(script)]))
    elif language == "":
        if text.startswith("lightning_pg/"):
            assert all((REPO / "lightning_pg" / name).exists() for name in
                       re.findall(r"^  ([\w/]+\.py|\w+/)", text, re.M))  # the layout names real files
        else:
            check_console_sample(session, text)
    else:
        pytest.fail(f"README.md:{line}: a ```{language} block this test does not know how to run")


def check_set_up_is_what_ci_installs(setup):
    assert setup[:2] == ["python3 -m venv .venv", ". .venv/bin/activate"]
    ci_installs = [re.sub(r"^python -m pip install -q ", "", s) for s in CI_STEPS if "pip install -q" in s]
    for step in setup[2:]:
        assert step.startswith("pip install "), step
        wanted = step.removeprefix("pip install ")
        if wanted.startswith('-e ".['):  # the extras a README command installs, CI installs too
            extras = set(re.search(r"\[(.*)\]", wanted).group(1).split(","))
            ci_extras = set(re.search(r"\[(.*)\]", next(c for c in ci_installs if c.startswith("-e"))).group(1).split(","))
            assert extras <= ci_extras, (extras, ci_extras)
        else:
            assert wanted in ci_installs, (wanted, ci_installs)


def check_console_sample(session, sample):
    """The sample's lines have the default job's real lines' shape, and the real console has nothing else."""
    real = session["outputs"][0]  # the install block's default job
    lines = [line for line in real.splitlines() if line.strip()]
    program = sample.splitlines()[2].split(":")[0]  # "PPO"
    assert all(line.startswith(("lightning_pg: ", f"{program}: ")) for line in lines), real
    for line in sample.splitlines():
        if line.startswith("lightning_pg: "):
            start = " ".join(line.split()[:3])  # "lightning_pg: run folder", "lightning_pg: PPO on", ...
            assert any(real_line.startswith(start) for real_line in lines), (start, real)
