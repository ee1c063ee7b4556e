"""Checkpoints never run code. Two hostile files (a pickled payload in the env state, and an env entry point
that names os:system) run nothing on any path: CLI fit and validate, load_from_checkpoint, Trainer.fit,
evaluate and predict; the marker file their payload would create never appears. A checkpoint whose env
state this user did not sign resumes with rebuilt envs and a warning."""
import os
import pickle
import stat
import sys

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from lightning_pg import PPO, ConfigError, EnvError, evaluate, trust
from tests.helpers import ckpt_state, data_state, run_cli, run_folder

BUDGET = 2048


class Payload:
    """Unpickles by creating ``marker``, then returns what ``original`` unpickles to (the real envs, so a run
    that ran it would train on and nobody would notice)."""

    def __init__(self, marker, original):
        self.marker, self.original = str(marker), original

    def __reduce__(self):
        return eval, (f"(open({self.marker!r}, 'w').close(), __import__('pickle').loads({self.original!r}))[1]",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    result = run_cli(f"--model.total_timesteps={BUDGET}", "--model.eval_every=-1", "--seed_everything=3",
                     config="configs/ppo_cartpole.yaml", root=root)
    assert result.returncode == 0, result.stderr[-2000:]
    return run_folder(root) / "checkpoints" / "last.ckpt"


def _hostile_env_state(trained, tmp_path):
    marker = tmp_path / "env_payload_ran"
    state = ckpt_state(trained)
    data = data_state(state)
    payload = pickle.dumps(Payload(marker, data["envs"]))  # the old signature stays: it no longer matches
    live = tmp_path / "payload_is_live"
    pickle.loads(pickle.dumps(Payload(live, data["envs"])))  # the payload does run when unpickled
    assert live.exists()
    data["envs"] = payload
    path = tmp_path / "hostile_envs.ckpt"
    torch.save(state, path)
    torch.load(path, weights_only=True)  # weights_only alone lets it through: the bytes are plain bytes
    return path, marker


def _hostile_env_id(trained, tmp_path):
    marker = tmp_path / "env_id_ran"
    state = ckpt_state(trained)
    state["hyper_parameters"].update(env_id="os:system", env_kwargs={"command": f"touch {marker}"})
    path = tmp_path / "hostile_env_id.ckpt"
    torch.save(state, path)
    torch.load(path, weights_only=True)
    return path, marker


def test_env_payload_runs_on_no_path(trained, tmp_path):
    path, marker = _hostile_env_state(trained, tmp_path)
    resumed = run_cli(f"--model.total_timesteps={2 * BUDGET}", "--model.eval_every=-1", f"--ckpt_path={path}",
                      config="configs/ppo_cartpole.yaml", root=tmp_path / "cli")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "not signed by this user" in resumed.stderr
    validated = run_cli(f"--ckpt_path={path}", config="configs/ppo_cartpole.yaml", root=tmp_path / "v",
                        subcommand="validate")
    assert validated.returncode == 0, validated.stderr[-2000:]

    model = PPO.load_from_checkpoint(path)  # the Python API: load, evaluate, predict, and resume with Trainer.fit
    evaluate(model, 2)
    model.predict(np.zeros(4, np.float32))
    model.hparams.total_timesteps = 2 * BUDGET
    with pytest.warns(UserWarning, match="not signed by this user"):
        pl.Trainer(logger=False, default_root_dir=tmp_path / "api", enable_progress_bar=False,
                   max_epochs=-1).fit(model, ckpt_path=path)
    assert model.num_timesteps >= 2 * BUDGET
    assert not marker.exists()


def test_env_entry_point_that_names_a_function_is_refused(trained, tmp_path):
    path, marker = _hostile_env_id(trained, tmp_path)
    with pytest.raises(EnvError, match="must be a gymnasium.Env subclass"):
        PPO.load_from_checkpoint(path)
    # the CLI builds the model from the config: the file's env_id is never used
    validated = run_cli(f"--ckpt_path={path}", config="configs/ppo_cartpole.yaml", root=tmp_path / "v",
                        subcommand="validate")
    assert validated.returncode == 0, validated.stderr[-2000:]
    assert not marker.exists()


def test_checkpoint_names_nothing_this_process_did_not_import(trained, tmp_path):
    marker = tmp_path / "module_imported"
    (tmp_path / "evil_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nimport gymnasium\n"
                                             "class Env(gymnasium.Env):\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        for key, value, error, message in (
            ("env_id", "evil_module:Env", EnvError, "whose module is not imported"),
            ("_instantiator", "os.system", ConfigError, "not LightningCLI's instantiator"),
            ("_class_path", "evil_module.Model", ConfigError, "not an imported subclass"),
        ):
            state = ckpt_state(trained)
            state["hyper_parameters"][key] = value
            torch.save(state, tmp_path / "h.ckpt")
            with pytest.raises(error, match=message):
                PPO.load_from_checkpoint(tmp_path / "h.ckpt")
    finally:
        sys.path.remove(str(tmp_path))
    assert not marker.exists() and "evil_module" not in sys.modules
    # a user's own env class, imported by the user, loads
    state = ckpt_state(trained)
    state["hyper_parameters"]["env_id"] = "tests.envs:Counter"
    torch.save(state, tmp_path / "own.ckpt")
    import tests.envs  # noqa: F401
    with pytest.raises(ConfigError, match="networks of other sizes"):  # Counter observes 1 number, CartPole 4
        PPO.load_from_checkpoint(tmp_path / "own.ckpt")


def test_unsigned_env_state_resumes_with_rebuilt_envs_and_a_warning(trained, tmp_path):
    state = ckpt_state(trained)
    del data_state(state)["envs_signature"]
    path = tmp_path / "foreign.ckpt"
    torch.save(state, path)
    root = tmp_path / "run"
    resumed = run_cli(f"--model.total_timesteps={2 * BUDGET}", "--model.eval_every=-1", f"--ckpt_path={path}",
                      config="configs/ppo_cartpole.yaml", root=root)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "not signed by this user" in resumed.stderr
    assert "building fresh envs seeded from the saved RNG" in resumed.stderr
    end = ckpt_state(run_folder(root) / "checkpoints" / "last.ckpt")
    assert end["lightning_pg"]["num_timesteps"] == 2 * BUDGET and end["global_step"] > state["global_step"]


def test_signature_is_this_users_key(tmp_path, monkeypatch):
    monkeypatch.setenv(trust.KEY_FILE_VARIABLE, str(tmp_path / "a" / "key"))
    signature = trust.sign(b"env bytes")
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "key").st_mode) == 0o600
    assert trust.signed_by_this_user(b"env bytes", signature)
    assert not trust.signed_by_this_user(b"env bytes!", signature)  # altered bytes
    assert not trust.signed_by_this_user(b"env bytes", None)  # no signature
    monkeypatch.setenv(trust.KEY_FILE_VARIABLE, str(tmp_path / "b" / "key"))
    assert not trust.signed_by_this_user(b"env bytes", signature)  # another user's key (not even created)
    assert not (tmp_path / "b" / "key").exists()
    assert trust.signed_by_this_user(b"env bytes", trust.sign(b"env bytes"))


def test_class_paths_inside_saved_values_are_not_built(trained, tmp_path):
    """Built from plain values: a {class_path, init_args} dict in a hyperparameter stays a dict (LightningCLI's
    instantiator would have imported and built it)."""
    marker = tmp_path / "handler_file"
    state = ckpt_state(trained)
    state["hyper_parameters"]["env_kwargs"] = {"class_path": "logging.FileHandler", "init_args": {"filename": str(marker)}}
    torch.save(state, tmp_path / "h.ckpt")
    with pytest.raises(EnvError, match="rejected env_kwargs"):  # CartPole gets them as keyword arguments
        PPO.load_from_checkpoint(tmp_path / "h.ckpt")
    assert not marker.exists()


def test_a_damaged_key_file_is_no_key(tmp_path, monkeypatch):
    key = tmp_path / "key"
    monkeypatch.setenv(trust.KEY_FILE_VARIABLE, str(key))
    key.write_text("")  # e.g. a write cut short: must not become the empty (public) key
    with pytest.warns(UserWarning, match="No checkpoint key"):
        assert trust.sign(b"data") is None
    assert not trust.signed_by_this_user(b"data", __import__("hmac").new(b"", b"data", "sha256").hexdigest())
