"""``python -m lightning_pg export --ckpt_path X --format onnx|torchscript --output F``: the deterministic policy
as one graph, from the env's raw observations to the env's actions, for serving without lightning_pg.

The graph computes what ``model.predict(obs, deterministic=True)`` returns, with the model's own code: the
algorithm's ``forward`` (observations as the networks take them -> actions, the exportable form of
``act(obs, deterministic=True)`` followed by the clipping or rescaling into a Box's bounds) inside
:class:`ExportedPolicy`, which adds only what ``predict`` does around it:

- in front, the flattening of Discrete, MultiDiscrete and MultiBinary observations into one float vector
  (``envs.FlatObservation``: one-hot per entry); Box observations, images included (uint8, the CNN scales them),
  go in as the env gives them. Dict and Tuple observations are refused;
- behind, the action layout of ``env_actions``: a Discrete's ``start`` added, MultiDiscrete and MultiBinary
  actions in the space's shape and dtype.

Observation normalization is inside (the frozen running statistics are buffers of the policy), and so is the
clipping of continuous actions. The batch dimension is dynamic: feed ``[B, *observation_shape]``, get
``[B, *action_shape]``.

ONNX is written by ``torch.onnx.export`` (``torch.export`` underneath, the batch dimension named ``batch``),
TorchScript by ``torch.jit.trace``, which PyTorch has deprecated in favour of ``torch.export``: prefer ONNX.
"""
from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor, nn

from lightning_pg.commands import CommandParser, add_imports_option, load_agent
from lightning_pg.errors import ConfigError

if TYPE_CHECKING:
    from lightning_pg.algorithms import RLModule

FORMATS = ("onnx", "torchscript")
#: the submodules whose parameters the deterministic policy reads: the on-policy ActorCritic, an off-policy actor
POLICY_PARTS = ("policy", "actor")
INPUT_NAME, OUTPUT_NAME = "obs", "action"


class ExportedPolicy(nn.Module):
    """``forward(obs [B, *obs_shape]) -> actions [B, *action_shape]``: raw observations of the env's own space
    (its dtype: float32 vectors, uint8 images, int64 Discrete indices) to the actions ``model.predict(obs,
    deterministic=True)`` returns, by calling the model's own ``forward``.

    The model itself is held outside the module tree (tracers would walk the LightningModule, whose ``trainer``
    raises when there is none); its policy networks are registered here, so the exported graph names their
    parameters and leaves the critics and target networks out.
    """

    def __init__(self, model: "RLModule"):
        super().__init__()
        self.observation_space, self.action_space = model.raw_observation_space, model.action_space
        check_observation_space(self.observation_space, type(model).__name__, model.hparams.env_id)
        self.networks = nn.ModuleDict({name: getattr(model, name) for name in POLICY_PARTS
                                       if isinstance(getattr(model, name, None), nn.Module)})
        object.__setattr__(self, "model", model)  # not a submodule (see above)

    def forward(self, obs: Tensor) -> Tensor:
        actions = self.model(self.flat_observations(obs))
        return self.env_actions(actions)

    def flat_observations(self, obs: Tensor) -> Tensor:
        """Observations as the networks read them, as ``envs.FlatObservation`` makes them (one-hot per entry)."""
        space = self.observation_space
        if isinstance(space, spaces.Discrete):
            return F.one_hot(obs.long() - int(space.start), int(space.n)).float()
        if isinstance(space, spaces.MultiBinary):
            return obs.flatten(1).float()
        if isinstance(space, spaces.MultiDiscrete):
            entries = obs.flatten(1).long() - torch.as_tensor(space.start.ravel(), dtype=torch.long)
            return torch.cat([F.one_hot(entries[:, i], int(n)) for i, n in enumerate(space.nvec.ravel())], -1).float()
        return obs  # a Box: as the env gives it

    def env_actions(self, actions: Tensor) -> Tensor:
        """The layout ``RLModule.env_actions`` gives the actions (the Box bounds are applied by ``forward``)."""
        space = self.action_space
        if isinstance(space, spaces.Discrete):
            return actions + int(space.start) if space.start else actions
        if isinstance(space, spaces.MultiDiscrete):
            start = torch.as_tensor(space.start, dtype=torch.long)
            return (actions.reshape(-1, *space.shape) + start).to(torch_dtype(space.dtype))
        if isinstance(space, spaces.MultiBinary):
            return actions.reshape(-1, *space.shape).to(torch_dtype(space.dtype))
        return actions


def torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


def check_observation_space(space: spaces.Space, algorithm: str, env_id: str) -> None:
    if not isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        raise ConfigError(
            f"This {algorithm} policy on '{env_id}' reads {type(space).__name__} observations ({space}), which "
            "export does not take: an ONNX or TorchScript graph takes arrays, and a Dict or Tuple observation would "
            "need its own input per part. Fix: flatten the observations in your serving code and in an env wrapper "
            "(gymnasium.wrappers.FlattenObservation in the config's env_wrappers) and train on that, or serve the "
            "policy with lightning_pg itself (model.predict)."
        )


def example_observations(space: spaces.Space, batch: int = 2) -> Tensor:
    """A batch of observations of the space for the tracers (two rows: a batch of one would be specialized),
    drawn by a copy of the space (the model's keeps its random stream)."""
    space = copy.deepcopy(space)
    space.seed(0)
    return torch.as_tensor(np.stack([space.sample() for _ in range(batch)]))


def export_policy(model: "RLModule", path: str | os.PathLike, format: str = "onnx") -> ExportedPolicy:
    """Write ``model``'s deterministic policy to ``path`` as ONNX or TorchScript (see the module's docstring);
    returns the :class:`ExportedPolicy` that was exported. The file appears whole or not at all."""
    if format not in FORMATS:
        raise ConfigError(f"--format {format}: export writes {' or '.join(FORMATS)}. Fix: pass one of them.")
    policy = ExportedPolicy(model)
    example = example_observations(policy.observation_space)
    path = Path(path)
    device, training = model.device, model.training  # (given back to the user's model below)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")  # beside it: os.replace is atomic
    # parameters that take no gradient: a TorchScript module's outputs would otherwise require grad (the user's
    # model gets its flags back below)
    flags = [(parameter, parameter.requires_grad) for parameter in policy.parameters()]
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    try:
        model.cpu().eval()
        check_same_as_predict(policy, model)
        policy.requires_grad_(False)
        onnx_logger.setLevel(logging.ERROR)  # its notes on optional packages (torchvision's ops) it does not need
        with torch.no_grad(), warnings.catch_warnings():
            # the exporters' notes about their own internals (pytree deprecations, TorchScript's deprecation,
            # tracer warnings on the shape checks that do not depend on the batch) are not the user's business
            warnings.simplefilter("ignore")
            if format == "onnx":
                write_onnx(policy, example, temporary)
            else:
                torch.jit.trace(policy, example).save(temporary)
        os.replace(temporary, path)
    except OSError as exc:
        raise ConfigError(f"The policy could not be written to {path} ({exc.strerror or exc}). Fix: pass a file path "
                          "in a folder you can write to, on a disk with space left.") from None
    finally:
        model.to(device).train(training)
        onnx_logger.setLevel(level)
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
        if temporary.exists():
            temporary.unlink()
    return policy


def check_same_as_predict(policy: ExportedPolicy, model: "RLModule", n: int = 64) -> None:
    """The graph runs the model's ``forward``; ``predict`` runs ``act_on_array``, ``policy_actions`` and
    ``env_actions``, which a subclass may change (an action mask, a mapping). Before anything is written, both
    answer ``n`` observations of the space: a one-paragraph error where they differ, never a silently
    different file."""
    obs = example_observations(policy.observation_space, n)
    with torch.no_grad():
        exported = policy(obs).numpy()
    predicted = np.asarray(model.predict(obs.numpy(), deterministic=True))
    same = exported.shape == predicted.shape and (
        np.allclose(exported, predicted, rtol=1e-5, atol=1e-5) if np.issubdtype(predicted.dtype, np.floating)
        else np.array_equal(exported, predicted))
    if not same:
        raise ConfigError(
            f"The exported graph would not answer as this {type(model).__name__}'s predict does (on {n} sample "
            "observations): the graph runs the model's forward(), which calls act(obs, deterministic=True), and "
            "this model's class changes what predict does elsewhere (act_on_array, policy_actions or "
            "env_actions). Fix: make the change in act() (or forward()), which both run, then export again; "
            "or serve the policy with lightning_pg's model.predict."
        )


def write_onnx(policy: ExportedPolicy, example: Tensor, path: Path) -> None:
    """torch.onnx's exporter (``torch.export`` underneath), the batch dimension named ``batch`` and dynamic, the
    weights inside the one file."""
    torch.onnx.export(policy, (example,), path, dynamo=True, dynamic_shapes=({0: "batch"},),
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], external_data=False, verbose=False)


def parser() -> CommandParser:
    parser = CommandParser(
        "export", "Write a checkpoint's deterministic policy as one ONNX or TorchScript graph: raw observations in, "
                  "env actions out, with observation normalization and action clipping inside.")
    parser.add_argument("--ckpt_path", required=True, help="a lightning_pg checkpoint (a run's last.ckpt or best.ckpt)")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="onnx (for onnxruntime and other ONNX runtimes) or torchscript (for torch.jit.load)")
    parser.add_argument("--output", required=True, metavar="FILE", help="the file to write (.onnx, .pt)")
    add_imports_option(parser)
    return parser


def check_output(output: str, ckpt_path: str) -> Path:
    """The output path, if a file can be written there (checked before the checkpoint is loaded: fail fast)."""
    path = Path(output)
    folder = path.parent
    problem = ("is a folder" if path.is_dir() else
               "is the checkpoint being exported" if path.exists() and Path(ckpt_path).exists() and
               path.samefile(ckpt_path) else
               f"is in {folder}, which does not exist" if not folder.is_dir() else
               f"is in {folder}, where this user cannot write" if not os.access(folder, os.W_OK | os.X_OK) else
               "exists and this user cannot overwrite it" if path.exists() and not os.access(path, os.W_OK) else None)
    if problem:
        raise ConfigError(f"--output {output}: the file cannot be written there (it {problem}). Fix: pass a file "
                          "path in an existing folder you can write to, e.g. --output policy.onnx.")
    return path


def describe(batch: Tensor) -> str:
    """``float32 [batch, 4]``: a graph input's or output's type, from an example batch."""
    return f"{str(batch.dtype).replace('torch.', '')} [batch{''.join(f', {n}' for n in batch.shape[1:])}]"


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    output = check_output(args.output, args.ckpt_path)
    model = load_agent(args.ckpt_path, args.imports)
    policy = export_policy(model, output, args.format)
    example = example_observations(policy.observation_space)
    with torch.no_grad():
        actions = policy(example)
    normalizes = getattr(getattr(model, "policy", None), "obs_rms", None) is not None
    inside = ["observation normalization"] if normalizes else []
    if isinstance(policy.action_space, spaces.Box):
        inside.append("action clipping into the bounds")
    print(f"lightning_pg: the deterministic policy of {type(model).__name__} on {model.hparams.env_id} "
          f"({model.num_timesteps} env steps) as {args.format} in {output} ({output.stat().st_size / 1024:.0f} KiB): "
          f"{INPUT_NAME} {describe(example)} -> {OUTPUT_NAME} {describe(actions)}"
          + (f"; {' and '.join(inside)} inside" if inside else ""), flush=True)
    return 0
