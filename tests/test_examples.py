"""The scripts in examples/ run as a user runs them (in a fresh working directory) and print their result."""
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO, cli_env


@pytest.mark.parametrize("script, expected", [
    ("train_cartpole.py", r"restored at 1\d{5} env steps"),  # REINFORCE: 100k+ env steps, the checkpoint loads back
    ("train_sac_pendulum.py", r"after 2000 env steps \(1900 updates\)"),  # resumed: no second warm-up, no burst
])
def test_example_runs(tmp_path, script, expected):
    result = subprocess.run([sys.executable, str(REPO / "examples" / script)], cwd=tmp_path, env=cli_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(expected, result.stdout), result.stdout[-2000:]
