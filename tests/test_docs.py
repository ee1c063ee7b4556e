"""The documentation builds with warnings as errors: mkdocs + mkdocstrings read the docstrings statically (griffe,
no import of torch), so a docstring that no longer parses, a broken link or a reference to a renamed object fails
here, in the suite CI runs. A few seconds."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        "`python -m mkdocs build --strict` failed (the docs extra installs it: pip install -e '.[docs]'):\n" + output
    )
    algorithms = (site / "reference" / "algorithms" / "index.html").read_text()
    for name in ("lightning_pg.algorithms.PPO", "lightning_pg.algorithms.SAC"):
        assert f'id="{name}"' in algorithms, name
    assert 'id="lightning_pg.algorithms.PPO.minibatches"' in algorithms  # a documented method of PPO
    assert "Parameters:" in algorithms and "Args:" not in algorithms  # Args sections parsed as Google style
    assert ":class:`" not in algorithms  # reST roles became code (docs/griffe_rst_roles.py)
    assert 'id="lightning_pg.evaluation.evaluate"' in (site / "reference" / "evaluation" / "index.html").read_text()
    for page in ("custom-env", "new-algorithm", "change-objective", "scale-out"):
        assert (site / "howto" / page / "index.html").is_file(), page
