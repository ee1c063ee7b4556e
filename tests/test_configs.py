"""Every YAML in configs/ runs as it is through the CLI (budget cut down), and no hyperparameter is unused."""
import ast
import glob
import sys
import inspect
from pathlib import Path

import pytest
import yaml

import lightning_pg
from lightning_pg.algorithms.base import RLModule
from tests.helpers import REPO, ckpt_state, run_cli, run_folder

CONFIGS = sorted(Path(p).name for p in glob.glob(str(REPO / "configs" / "*.yaml")))

# A smoke budget per config: enough for a few updates (off-policy configs need to pass learning_starts).
_OFF_POLICY_SMOKE = ["--model.total_timesteps=400", "--model.learning_starts=300", "--model.batch_size=64"]
SMOKE_OVERRIDES = {
    "ddpg_pendulum.yaml": _OFF_POLICY_SMOKE,
    "td3_pendulum.yaml": _OFF_POLICY_SMOKE,
    "sac_pendulum.yaml": _OFF_POLICY_SMOKE,
    "sac_halfcheetah.yaml": [*_OFF_POLICY_SMOKE, "--model.buffer_size=10000"],
    "td3_halfcheetah.yaml": [*_OFF_POLICY_SMOKE, "--model.buffer_size=10000"],
    # CNNs on the CPU: a few thousand steps of small updates, then two whole games of evaluation
    "ppo_atari.yaml": ["--model.total_timesteps=2048", "--model.n_steps=32", "--model.batch_size=64"],
    "a2c_atari.yaml": ["--model.total_timesteps=2000"],
}


@pytest.mark.parametrize("config", CONFIGS)
def test_config_runs_through_the_cli(tmp_path, config):
    init = yaml.safe_load((REPO / "configs" / config).read_text())["model"]["init_args"]
    one_batch = init.get("n_steps", 1) * init.get("num_envs", 1)  # a budget below it is refused at start
    budget = min(init.get("total_timesteps", 100_000), max(2_000, one_batch))
    overrides = SMOKE_OVERRIDES.get(config, [f"--model.total_timesteps={budget}"])
    budget = min([budget, *(int(o.split("=")[1]) for o in overrides if o.startswith("--model.total_timesteps="))])
    overridden = {o.split("=")[0].removeprefix("--model.") for o in overrides}
    result = run_cli(*overrides, "--model.eval_episodes=2", config=f"configs/{config}", root=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    warned = [line for line in result.stderr.splitlines() if "WARNING" in line or "warning:" in line]
    assert len(warned) == len(set(warned)), warned  # MuJoCo said its warning once per env it built
    state = ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")
    assert state["lightning_pg"]["num_timesteps"] >= budget
    # every key of the config reached the model unchanged (nothing silently dropped or renamed)
    saved = state["hyper_parameters"]
    for key, value in init.items():
        if key not in ("eval_episodes", *overridden):
            assert saved[key] == value, key


def _algorithms():
    found = [getattr(lightning_pg, name) for name in dir(lightning_pg)]
    return [cls for cls in found if inspect.isclass(cls) and issubclass(cls, RLModule) and cls is not RLModule]


def _uses(cls) -> set[str]:
    """Names each class in the MRO reads: `hparams.X` anywhere in its module, plain names in its __init__."""
    used: set[str] = set()
    for klass in cls.__mro__:
        if not (inspect.isclass(klass) and issubclass(klass, RLModule)):
            continue
        tree = ast.parse(inspect.getsource(inspect.getmodule(klass)))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "hparams":
                used.add(node.attr)
        init = next(n for n in ast.walk(ast.parse(inspect.getsource(klass))) if isinstance(n, ast.FunctionDef)
                    and n.name == "__init__") if "__init__" in klass.__dict__ else None
        for stmt in init.body if init else ():
            used |= {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)}
    return used


@pytest.mark.parametrize("cls", _algorithms(), ids=lambda c: c.__name__)
def test_no_unused_hyperparameters(cls):
    params = set()
    for klass in cls.__mro__:
        if "__init__" in klass.__dict__ and issubclass(klass, RLModule):
            params |= set(inspect.signature(klass.__init__).parameters) - {"self", "kwargs"}
    unused = params - _uses(cls)
    assert not unused, f"{cls.__name__} accepts hyperparameters it never reads: {sorted(unused)}"


def test_without_mujoco_a_mujoco_config_gets_the_one_paragraph_install_error(tmp_path, monkeypatch, capsys):
    from lightning_pg import cli

    monkeypatch.setitem(sys.modules, "mujoco", None)  # as if the envs extra were not installed
    monkeypatch.setattr(sys, "argv", ["lightning_pg"])
    with pytest.raises(SystemExit) as exit_:
        cli.main(["fit", "--config", str(REPO / "configs" / "sac_halfcheetah.yaml"), "--trainer.logger=false",
                  f"--trainer.default_root_dir={tmp_path}"])
    assert exit_.value.code == 2
    assert "pip install 'lightning_pg[envs]'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written
