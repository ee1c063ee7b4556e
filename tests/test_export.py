"""export: policies trained through the CLI (discrete, continuous off- and on-policy with observation
normalization, pixels) written as ONNX and TorchScript, run by onnxruntime and torch.jit.load, against
model.predict on observations the env produced; the action layouts of the other spaces; bad input.

Each policy is trained in a subprocess through the CLI (a few thousand env steps), by the one test that uses it.
The exports run through the command's entry point in this process (``commands.run("export", argv)``, what
``python -m lightning_pg export`` calls): a subprocess per export would cost ~4 s of imports each; one export and
one bad input run the command as a user does."""
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
import torch

import lightning_pg as lp
from lightning_pg.commands import load_agent, run
from lightning_pg.commands.export import export_policy
from lightning_pg.envs import make_env
from lightning_pg.errors import ConfigError
from tests.helpers import REPO, cli_env, run_cli, run_folder

#: name -> (config, overrides): a few thousand env steps each, no evaluation, no logger
TRAININGS = {
    "discrete": ("configs/ppo_cartpole.yaml", ["--model.total_timesteps", "4096"]),
    "sac": ("configs/sac_pendulum.yaml", ["--model.total_timesteps", "1500", "--model.learning_starts", "500",
                                          "--model.network", "[64, 64]"]),
    "normalized": ("configs/ppo_pendulum.yaml", ["--model.total_timesteps", "4096", "--model.n_steps", "512",
                                                 "--model.normalize_obs", "true"]),
    "pixels": ("configs/ppo_cartpole.yaml", ["--model.env_id", "tests.envs:PixelCartPole", "--model.num_envs", "2",
                                             "--model.n_steps", "128", "--model.batch_size", "64",
                                             "--model.n_epochs", "2", "--model.total_timesteps", "1024"]),
}
#: modules to import before loading a checkpoint (a checkpoint never imports code itself)
IMPORTS = {"pixels": ["tests.envs"]}


def train(name, root):
    """The last.ckpt of training ``name`` through the CLI in a subprocess."""
    config, overrides = TRAININGS[name]
    result = run_cli(*overrides, "--model.eval_every", "-1", config=config, root=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_folder(root) / "checkpoints" / "last.ckpt"


def env_observations(model, count=100, seed=0):
    """``count`` observations the env gives under random actions (episodes restarted as they end)."""
    env = make_env(model.hparams.env_id, model.hparams.env_kwargs, model.hparams.env_wrappers, training=False)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    seen = []
    while len(seen) < count:
        seen.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return np.stack(seen)


def run_exported(path, fmt, obs):
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"obs": obs})[0]
    return torch.jit.load(str(path))(torch.as_tensor(obs)).numpy()


def assert_same_actions(got, want, discrete):
    assert got.shape == want.shape and got.dtype == want.dtype
    if discrete:
        np.testing.assert_array_equal(got, want)
    else:
        assert np.abs(got - want).max() <= 1e-5


def export_command(*args):
    return subprocess.run([sys.executable, "-m", "lightning_pg", "export", *map(str, args)], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", list(TRAININGS))
def test_exported_policy_gives_the_actions_of_predict(name, tmp_path):
    """Each trained policy in both formats (one test per training: parallel workers never train one twice)."""
    ckpt, imports = train(name, tmp_path / "runs"), IMPORTS.get(name, [])
    model = load_agent(str(ckpt), imports)
    assert model.num_timesteps >= 1024  # trained, not at init
    obs = env_observations(model)
    if name == "pixels":
        assert obs.dtype == np.uint8 and obs.shape == (100, 64, 64, 3)
    if name == "normalized":  # the statistics are far from the identity, so a graph without them would differ
        rms = model.policy.obs_rms
        assert rms.count > 4000 and rms.var.max() > 2.0
    want = model.predict(obs, deterministic=True)
    discrete = name in ("discrete", "pixels")
    assert len(np.unique(want)) > (1 if discrete else 10)  # the actions vary: the comparison can fail
    if not discrete:
        assert (want >= model.action_space.low).all() and (want <= model.action_space.high).all()
    for fmt, output in (("onnx", tmp_path / "policy.onnx"), ("torchscript", tmp_path / "policy.pt")):
        argv = ["--ckpt_path", ckpt, "--format", fmt, "--output", output, *(f"--import={m}" for m in imports)]
        if name == "discrete" and fmt == "onnx":  # once as a user runs it (the others: its entry point, in here)
            result = export_command(*argv)
            assert result.returncode == 0, result.stderr
            assert result.stdout.count("\n") == 1 and "obs float32 [batch, 4] -> action int64 [batch]" in result.stdout
            assert result.stderr == ""  # none of the exporters' notes
            session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
            assert [i.shape for i in session.get_inputs()] == [["batch", 4]]
        else:
            assert run("export", [str(a) for a in argv]) == 0
        assert_same_actions(run_exported(output, fmt, obs), want, discrete)
        assert_same_actions(run_exported(output, fmt, obs[:1]), want[:1], discrete)  # the batch size is free
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.onnx", "policy.pt", "runs"]  # no weights beside


#: observation and action spaces of tests.test_spaces.SpacesEnv (starts other than 0, shapes other than flat)
SPACES = [("Discrete", "Discrete"), ("MultiDiscrete", "MultiDiscrete"), ("MultiBinary", "MultiBinary"),
          ("MultiBinary", "Box")]


@pytest.mark.parametrize("observation, action", SPACES)
def test_other_spaces_are_flattened_and_laid_out_as_predict_does(observation, action, tmp_path):
    """Fresh policies with weights scaled up (so that the actions vary, and the Box means fall outside the
    bounds: clipping is inside the graph too)."""
    torch.manual_seed(0)
    model = lp.PPO(env_id="tests.test_spaces:SpacesEnv", env_kwargs={"observation": observation, "action": action},
                   n_steps=8, batch_size=8).eval()
    with torch.no_grad():
        for parameter in model.policy.parameters():
            parameter.mul_(30.0)
        for parameter in model.policy.pi_head.parameters():  # (initialized at a gain of 0.01)
            parameter.mul_(10.0)
    space = model.raw_observation_space
    space.seed(0)
    obs = np.stack([space.sample() for _ in range(100)])
    want = model.predict(obs)
    for fmt, name in (("onnx", "policy.onnx"), ("torchscript", "policy.pt")):
        export_policy(model, tmp_path / name, fmt)
        assert_same_actions(run_exported(tmp_path / name, fmt, obs), want, action != "Box")
    assert model.action_space.contains(want[0].astype(model.action_space.dtype))
    assert len(np.unique(want.reshape(len(want), -1), axis=0)) > 1
    if action == "Box":
        assert (np.abs(want) == 2.0).any() and (np.abs(want) < 2.0).any()  # some clipped, some not


def test_dict_observations_are_refused_in_one_paragraph(tmp_path):
    model = lp.PPO(env_id="tests.test_spaces:SpacesEnv", env_kwargs={"observation": "Dict"}, n_steps=8, batch_size=8)
    with pytest.raises(ConfigError, match="Dict observations .*Fix: flatten"):
        export_policy(model, tmp_path / "policy.onnx")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("problem", ["missing checkpoint", "unknown format", "no such folder", "output is a folder",
                                     "not a checkpoint"])
def test_bad_input_is_one_paragraph(problem, tmp_path):
    """The checkpoint named by default is a config file: every other problem is found before it is read; nothing
    is written."""
    args = {"--ckpt_path": REPO / "configs" / "ppo_cartpole.yaml", "--format": "onnx",
            "--output": tmp_path / "policy.onnx"}
    expected = {
        "missing checkpoint": ("--ckpt_path", tmp_path / "nowhere.ckpt", "does not exist"),
        "unknown format": ("--format", "tflite", "invalid choice: 'tflite'"),
        "no such folder": ("--output", tmp_path / "missing" / "policy.onnx", "which does not exist"),
        "output is a folder": ("--output", tmp_path, "it is a folder"),
        "not a checkpoint": ("--format", "onnx", "ppo_cartpole.yaml cannot be read"),
    }
    option, value, message = expected[problem]
    args[option] = value
    with pytest.raises(ConfigError, match=message) as error:
        run("export", [str(a) for pair in args.items() for a in pair])
    assert "Fix:" in str(error.value) and "\n" not in str(error.value)
    assert sorted(tmp_path.iterdir()) == []  # nothing written, not even a partial file


def test_bad_input_exits_with_status_2(tmp_path):
    result = export_command("--ckpt_path", tmp_path / "nowhere.ckpt", "--format", "onnx", "--output",
                            tmp_path / "policy.onnx")
    assert result.returncode == 2
    assert result.stderr.startswith("lightning_pg: error: The checkpoint") and result.stderr.count("\n") == 1


class MaskedPPO(lp.PPO):
    """predict changed outside act() (as an action mask added in act_on_array would be)."""

    def act_on_array(self, obs, deterministic):
        return np.zeros(len(obs), dtype=np.int64)


def test_a_model_whose_predict_is_not_its_forward_is_refused_and_nothing_written(tmp_path):
    model = MaskedPPO(env_id="CartPole-v1", num_envs=2, n_steps=16, batch_size=32)
    with pytest.raises(ConfigError, match=r"would not answer as this MaskedPPO's predict does.*Fix: make the change "
                                          r"in act\(\)"):
        export_policy(model, tmp_path / "policy.onnx", "onnx")
    assert sorted(tmp_path.iterdir()) == []


def test_the_checkpoint_itself_is_not_an_output(tmp_path):
    ckpt = tmp_path / "policy.ckpt"
    ckpt.write_bytes(b"PK not really")
    with pytest.raises(ConfigError, match="it is the checkpoint being exported"):
        run("export", ["--ckpt_path", str(ckpt), "--format", "onnx", "--output", str(tmp_path / "." / "policy.ckpt")])
    assert ckpt.read_bytes() == b"PK not really"


class SubclassedPPO(lp.PPO):
    """A user's algorithm class, trained through the Python API (its checkpoint names no class path)."""


def test_a_python_api_checkpoint_of_a_subclass_loads_once_its_module_is_imported(tmp_path):
    import pytorch_lightning as pl

    model = SubclassedPPO(env_id="CartPole-v1", num_envs=2, n_steps=16, batch_size=32, total_timesteps=64,
                          eval_every=-1)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False, max_epochs=-1,
                         default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(model)
    trainer.save_checkpoint(tmp_path / "sub.ckpt")
    assert type(load_agent(str(tmp_path / "sub.ckpt"))) is SubclassedPPO  # this module is imported here
    args = ("--ckpt_path", tmp_path / "sub.ckpt", "--format", "onnx", "--output", tmp_path / "sub.onnx")
    refused = export_command(*args)  # a process that has not imported it
    assert refused.returncode == 2 and "pass --import with the module that defines SubclassedPPO" in refused.stderr
    assert export_command(*args, "--import", "tests.test_export").returncode == 0
