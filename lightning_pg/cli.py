"""``python -m lightning_pg fit|validate|test --config FILE``: LightningCLI in subclass mode; ``play``,
``export``, ``plot`` and ``tune`` are commands of lightning_pg's own (:mod:`lightning_pg.commands`).

Defaults a user should not have to write:

- runs never overwrite each other: each ``fit`` writes into a run folder of its own,
  ``<--trainer.default_root_dir>/run_N`` (the root defaults to ``runs/<algorithm>_<env>``); ``--ckpt_path
  last`` continues the newest run in its folder; ``validate`` and ``test`` write nothing;
- ``--trainer.logger true`` (the default) is a W&B logger writing in the run folder, offline unless
  ``WANDB_MODE`` says otherwise (``wandb sync <run>/wandb/offline-run-*`` uploads later), holding the full
  config; a resumed run continues the same W&B run id. ``false`` turns logging off; a ``class_path``
  (CSVLogger, TensorBoardLogger, a WandbLogger of your own) replaces it;
- :class:`~lightning_pg.callbacks.RLCheckpoint` as ``--checkpoint.*``: ``last.ckpt`` every N env steps, at
  the end and on Ctrl+C or SIGTERM (within a grace period);
- user mistakes (bad hyperparameters, unknown env, damaged checkpoint, ...) print one paragraph, no
  traceback, write nothing and exit with status 2; ``--debug`` or ``LIGHTNING_PG_DEBUG=1`` shows the traceback.
"""
from __future__ import annotations

import contextlib
import gc
import glob
import logging
import os
import re
import secrets
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from jsonargparse import ArgumentError
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.cli import (
    LightningArgumentParser,
    LightningCLI,
    SaveConfigCallback,
)

from lightning_pg.algorithms import RLModule
from lightning_pg.callbacks import RLCheckpoint
from lightning_pg.commands import COMMANDS
from lightning_pg.commands import run as run_command
from lightning_pg.errors import ConfigError, LightningPGError, StopRequested
from lightning_pg.loggers import MetricsCSV
from lightning_pg.trust import read_checkpoint

TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": True,  # Lightning's "the default logger"; here that is W&B in offline mode (default_logger())
    "max_epochs": -1,  # the env-step budget (model.total_timesteps) ends the fit, not epochs
    "num_sanity_val_steps": 0,
    "enable_model_summary": False,  # the start line gives the parameter count (see before_fit)
}


class ConfigToLogger(SaveConfigCallback):
    """Also put the full config in the logger's run (W&B's config panel), not only config.yaml."""

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if trainer.logger is not None:
            trainer.logger.log_hyperparams({"config": self.config.as_dict()})


#: the top-level --help's last lines: the commands that are not Lightning's
COMMANDS_HELP = "commands for trained agents: " + "; ".join(f"{name}: {what}" for name, what in COMMANDS.items()) + \
    " (python -m lightning_pg <command> --help)."


class RLCLI(LightningCLI):
    def __init__(self, args: Any = None, run: bool = True):
        self.continues_run = False  # set by _parse_ckpt_path: a fit from <run_N>/checkpoints/last.ckpt
        super().__init__(
            RLModule,
            subclass_mode_model=True,
            trainer_defaults=TRAINER_DEFAULTS,
            save_config_callback=ConfigToLogger,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            args=args,
            run=run,
            parser_kwargs={"exit_on_error": False, "prog": "python -m lightning_pg", "epilog": COMMANDS_HELP,
                           **{name: {"exit_on_error": False} for name in self.subcommands()}},
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # fit trains; validate/test play evaluation episodes from --ckpt_path (no `predict`: use model.predict)
        return {name: keys for name, keys in LightningCLI.subcommands().items() if name != "predict"}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RLCheckpoint, "checkpoint")
        parser.add_argument(
            "--torch_threads", type=Optional[int], default=None,
            help="torch's intra-op threads for this process (torch.set_num_threads); null leaves torch's default. "
                 "Small MLPs are a long chain of tiny ops that threads only slow down: their configs set 1.",
        )
        parser.add_argument(
            "--tune", type=Optional[dict], default=None,
            help="the search space of `python -m lightning_pg tune` (hyperparameter name: distribution); fit, "
                 "validate and test ignore it (docs/howto/tune.md).",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        threads = config.get("torch_threads")
        if threads is not None:
            if threads < 1:
                raise ConfigError(f"Invalid torch_threads={threads}: it must be an integer >= 1, or null for torch's "
                                  "default. Fix: set torch_threads at the top level of your config or pass "
                                  "--torch_threads N.")
            torch.set_num_threads(threads)
        _mujoco_warnings_once(((config.get("model") or {}).get("init_args") or {}).get("env_id"))

    def _set_seed(self) -> None:
        # Lightning seeds a run without --seed_everything with 0, so two such runs were one run twice: draw a
        # fresh seed instead; Lightning prints it ("Seed set to N") and config.yaml keeps it, so the run can be
        # repeated. DDP workers Lightning launches take their rank 0's (it passes PL_GLOBAL_SEED on).
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("seed_everything") is True and self.subcommand == "fit":
            worker = not _first_process() and "PL_GLOBAL_SEED" in os.environ
            config["seed_everything"] = int(os.environ["PL_GLOBAL_SEED"]) if worker else secrets.randbelow(2**31)
        super()._set_seed()

    def _parse_ckpt_path(self) -> None:
        # Lightning would replace the config's model by the checkpoint's hyperparameters; here the config
        # defines the run (so `--model.total_timesteps` can extend a finished one) and the checkpoint its state.
        # Runs never overwrite each other: a fit writes into a run folder of its own under the root
        # (--trainer.default_root_dir), `last` and `best` name files of the newest run there, resolved here once.
        if not self.config.get("subcommand"):
            return
        fit = self.config.subcommand == "fit"
        config = self.config[self.config.subcommand]
        trainer = config["trainer"]
        if not trainer.get("default_root_dir"):
            trainer["default_root_dir"] = _default_root(config)
        root = trainer["default_root_dir"]
        _check_folder("--trainer.default_root_dir", root)
        checkpoint = config.get("checkpoint") or {}
        if checkpoint.get("dirpath"):  # the user placed the checkpoints: that folder is the run's
            _check_folder("--checkpoint.dirpath", checkpoint["dirpath"])
        ckpt_path, run = config.get("ckpt_path"), None
        if ckpt_path in ("last", "best"):
            name = "last.ckpt" if ckpt_path == "last" else f"{checkpoint.get('filename') or 'best'}.ckpt"
            found = _newest_with(root, checkpoint.get("dirpath"), name)
            if found:
                config["ckpt_path"], run = found
                if ckpt_path == "best":  # only last.ckpt continues a run (its later checkpoints and rows stay)
                    run = None
            elif ckpt_path == "last" and fit:
                # a job script that always passes `--ckpt_path last` starts the run the first time
                say(f"no last.ckpt under {root} to resume: starting a new run.")
                config["ckpt_path"] = None
            else:
                raise ConfigError(
                    f"--ckpt_path {ckpt_path}: no run under {root} has a {name} (best.ckpt is written after the "
                    "first evaluation, last.ckpt at the first save). Fix: pass an existing .ckpt file, or the "
                    "--trainer.default_root_dir of the runs that wrote it."
                )
        elif ckpt_path not in (None, "hpc", "registry"):
            if not Path(ckpt_path).is_file():
                raise ConfigError(
                    f"--ckpt_path {ckpt_path} does not exist. Fix: pass an existing .ckpt file, or `--ckpt_path "
                    "last` to continue the newest run under --trainer.default_root_dir."
                )
            path = Path(ckpt_path).resolve()  # <run_N>/checkpoints/last.ckpt: that run goes on in its folder
            continues = path.name == "last.ckpt" and path.parent.name == "checkpoints" and \
                re.fullmatch(rf"{RUN_PREFIX}\d+", path.parent.parent.name)
            run = str(path.parent.parent) if continues else None
        self.continues_run = fit and run is not None  # its W&B run and metrics.csv go on
        if fit and not checkpoint.get("dirpath"):
            if not _first_process() and os.environ.get(RUN_FOLDER_VARIABLE):
                run = os.environ[RUN_FOLDER_VARIABLE]  # a DDP worker Lightning launched: its rank 0's run folder
            elif not _first_process() and not run:
                # another node's process (torchrun, srun): rank 0 makes the run folder and writes everything
                # there (checkpoint folders are broadcast from it); this one only needs a path
                run = _new_run(root)
            trainer["default_root_dir"] = run or _claim_new_run(root)
            os.environ[RUN_FOLDER_VARIABLE] = trainer["default_root_dir"]  # inherited by the workers it launches

    # Inputs are checked before the subcommand runs: nothing (config.yaml, W&B run, checkpoint) is written
    # for a run that would be refused.
    def before_fit(self) -> None:
        checkpoint = self._check_checkpoint()
        done = int(checkpoint["lightning_pg"]["num_timesteps"]) if checkpoint else 0
        self.model.check_budget_left(done)
        self.model.check_fit_memory()
        first = _first_process()
        if first:  # the run folder: its inputs are good
            os.makedirs(self.trainer.default_root_dir, exist_ok=True)
        if self.trainer.num_devices * self.trainer.num_nodes == 1:  # (under DDP rank 0 takes it in setup)
            for callback in self.trainer.checkpoint_callbacks:
                if isinstance(callback, RLCheckpoint):
                    callback.hold_folder(self.trainer)
        self._start_loggers()
        folder = (self.config[self.subcommand].get("checkpoint") or {}).get("dirpath") or self.trainer.default_root_dir
        self.trainer.loggers = [*self.trainer.loggers, MetricsCSV(folder, resume_at=done if self.continues_run else None)]
        if first:
            model, trainer, config = self.model, self.trainer, self.config[self.subcommand]
            params = sum(p.numel() for p in model.parameters())
            say(f"{type(model).__name__} on {model.hparams.env_id}: observations {_describe(model.observation_space)}, "
                f"actions {_describe(model.action_space)}; {params:,} parameters; {trainer.strategy.root_device.type}, precision "
                f"{trainer.precision}; seed {config.get('seed_everything')}; {model.hparams.total_timesteps:,} env steps")
            say(f"run folder {trainer.default_root_dir}" + (f", resuming {config['ckpt_path']} at {done:,} env steps"
                                                             if checkpoint else ""))

    def after_fit(self) -> None:
        if not _first_process():
            return
        for callback in self.trainer.checkpoint_callbacks:
            files = [p for p in (getattr(callback, "last_model_path", ""), getattr(callback, "best_model_path", "")) if p]
            if files:
                say(f"checkpoints {' and '.join(files)}")
        for logger in self.trainer.loggers:
            runs = sorted(glob.glob(os.path.join(logger.save_dir or "", "wandb", "offline-run-*")))
            if isinstance(logger, MetricsCSV):
                say(f"metrics {logger.path}")
            elif type(logger).__name__ == "WandbLogger" and runs:
                say(f"W&B run {runs[-1]} (upload it with `wandb sync {runs[-1]}`)")
            elif type(logger).__name__ != "WandbLogger" and logger.log_dir:
                say(f"logs {logger.log_dir}")

    def before_validate(self) -> None:
        self._check_checkpoint()
        self._start_loggers()

    before_test = before_validate

    def _check_checkpoint(self) -> dict[str, Any] | None:
        path = self.config[self.subcommand].get("ckpt_path")
        if path is None or not os.path.isfile(path):
            return None
        checkpoint = read_checkpoint(path)
        self.model.check_checkpoint(checkpoint, f"The checkpoint {path}")
        return checkpoint

    def _start_loggers(self) -> None:
        """Start W&B now, bounded: an online run that cannot reach its server (``WANDB_INIT_TIMEOUT``, 15 s by
        default, per attempt: about 30 s in all) logs offline instead, and says how to upload it later."""
        from pytorch_lightning.loggers import WandbLogger

        loggers = list(self.trainer.loggers)
        for i, logger in enumerate(loggers):
            if not isinstance(logger, WandbLogger) or getattr(logger, "_offline", False):
                continue
            try:
                logger.experiment  # noqa: B018 - creates the run
            except Exception as exc:  # noqa: BLE001 - whatever stops W&B from starting online
                import wandb

                wandb.teardown()  # the failed session keeps its settings (the run folder among them) otherwise
                kwargs = {k: v for k, v in logger._wandb_init.items() if k not in ("settings", "mode", "dir")}
                loggers[i] = WandbLogger(save_dir=logger.save_dir, offline=True, mode="offline",
                                         settings=wandb.Settings(silent=True), **kwargs)
                print(f"lightning_pg: W&B could not start online ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}): "
                      f"logging offline under {logger.save_dir}/wandb instead; upload it later with `wandb sync "
                      f"{logger.save_dir}/wandb/offline-run-*`.", file=sys.stderr, flush=True)
        self.trainer.loggers = loggers

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Any:
        if self.subcommand in ("validate", "test"):  # they read a run's files and write none of their own
            self.save_config_callback = None
            if config.get("logger") in (True, None):
                config["logger"] = False
        elif config.get("logger") in (True, None):
            config["logger"] = self.default_logger(config)
        return super()._instantiate_trainer(config, callbacks)

    def default_logger(self, trainer_config: dict[str, Any]) -> Any:
        """W&B under the run directory, offline unless WANDB_MODE says otherwise, continuing a resumed run.

        Built here rather than declared as a class_path default: jsonargparse would resolve WandbLogger's
        signature at every start, also for runs that turn the logger off.
        """
        from pytorch_lightning.loggers import WandbLogger

        root = trainer_config["default_root_dir"]  # the run folder (see _parse_ckpt_path)
        import wandb

        kwargs: dict[str, Any] = {"save_dir": root, "project": "lightning_pg"}
        # silent: the end line names the run and its `wandb sync` command; online starts are bounded (see
        # _start_loggers), where wandb's own default waits 90 s and more
        settings = {"silent": True}
        if "WANDB_MODE" not in os.environ:
            kwargs["offline"] = True
        else:
            settings["init_timeout"] = float(os.environ.get("WANDB_INIT_TIMEOUT", 15))
        kwargs["settings"] = wandb.Settings(**settings)
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand == "fit" and self.continues_run:
            run_id = _wandb_run_id(config.get("ckpt_path"))
            if run_id is not None:
                kwargs.update(id=run_id, resume="allow")
        logger = WandbLogger(**kwargs)
        logger._wandb_init.pop("anonymous", None)  # WandbLogger always passes it, and wandb warns it does nothing
        return logger


RUN_PREFIX = "run_"
RUN_FOLDER_VARIABLE = "LIGHTNING_PG_RUN_FOLDER"


def _first_process() -> bool:
    """Whether this is the run's global rank 0, from what its launcher set before torch.distributed starts, in
    Lightning's order: torchrun's RANK (with a WORLD_SIZE above 1), the LOCAL_RANK and NODE_RANK of processes
    Lightning started itself (also inside an interactive SLURM job), then srun's SLURM_PROCID where Lightning
    uses SLURM; a plain run is."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
        return os.environ["RANK"] == "0"
    if "LOCAL_RANK" in os.environ or "NODE_RANK" in os.environ:
        return os.environ.get("NODE_RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return not SLURMEnvironment.detect() or os.environ.get("SLURM_PROCID", "0") == "0"


def _default_root(config: Any) -> str:
    """``runs/<algorithm>_<env>`` when neither the config nor the command line names a root."""
    model = config.get("model") or {}
    algorithm = str(model.get("class_path") or "model").rsplit(".", 1)[-1].lower()
    env = re.sub(r"[^A-Za-z0-9]+", "_", str((model.get("init_args") or {}).get("env_id") or "env")).strip("_").lower()
    return os.path.join("runs", f"{algorithm}_{env}")


def _runs(root: str) -> list[str]:
    """The run folders under ``root`` (``run_1``, ``run_2``, ...), oldest first."""
    try:
        names = [n for n in os.listdir(root) if re.fullmatch(rf"{RUN_PREFIX}\d+", n)]
    except OSError:
        return []
    return [os.path.join(root, n) for n in sorted(names, key=lambda n: int(n[len(RUN_PREFIX):]))
            if os.path.isdir(os.path.join(root, n))]


def _new_run(root: str) -> str:
    """The next run folder's path."""
    runs = _runs(root)
    return os.path.join(root, f"{RUN_PREFIX}{int(os.path.basename(runs[-1])[len(RUN_PREFIX):]) + 1 if runs else 1}")


#: folders this process made for a new run, removed again at exit while they are empty (a run refused at start)
_CLAIMED: list[str] = []


def _claim_new_run(root: str) -> str:
    """Make the next run folder, taking the one after where another run started at the same moment (``mkdir``
    is atomic: two fits started together get run_N and run_N+1, never one folder)."""
    missing = [str(p) for p in [*reversed(Path(root).parents), Path(root)] if not p.exists()]
    os.makedirs(root, exist_ok=True)
    _CLAIMED[:0] = reversed(missing)  # innermost first
    number = int(os.path.basename(_new_run(root))[len(RUN_PREFIX):])
    while True:
        run = os.path.join(root, f"{RUN_PREFIX}{number}")
        try:
            os.mkdir(run)
        except FileExistsError:  # another run's folder now, or a file of that name: the next number
            number += 1
            continue
        _CLAIMED.insert(0, run)
        return run


def _release_unused_runs() -> None:
    for folder in _CLAIMED:  # innermost first; a folder that holds anything stays
        with contextlib.suppress(OSError):
            os.rmdir(folder)
    _CLAIMED.clear()


def _newest_with(root: str, dirpath: str | None, name: str) -> tuple[str, str] | None:
    """``(file, run folder)`` of the newest run holding ``checkpoints/<name>``: ``dirpath`` when set; else the
    root's newest run, else the root itself when it is a run folder (given explicitly, or laid out before run
    folders)."""
    if dirpath:
        path = os.path.join(dirpath, name)
        return (path, os.path.dirname(os.path.abspath(dirpath))) if os.path.isfile(path) else None
    for run in [*reversed(_runs(root)), root]:
        path = os.path.join(run, "checkpoints", name)
        if os.path.isfile(path):
            return path, run
    return None


def _check_folder(what: str, folder: str) -> None:
    """``folder`` is a folder, or can be made one, before anything is written."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{what} {folder} cannot be a folder: {existing} is a file. Fix: pass a folder path for "
            "--trainer.default_root_dir (and --checkpoint.dirpath), or move that file away."
        )


def _wandb_run_id(ckpt_path: str | None) -> str | None:
    """The W&B run id stored in the checkpoint we resume from, so the resumed run continues it."""
    if not ckpt_path or not os.path.isfile(ckpt_path):
        return None
    try:
        state = read_checkpoint(ckpt_path)
    except ConfigError:  # reported in one paragraph by the checks before the run
        return None
    return (state.get("lightning_pg") or {}).get("wandb_run_id")


def _describe(space: Any) -> str:
    """A space in a few words: ``Box (4,) float32`` rather than its bounds, element by element."""
    return f"Box {tuple(space.shape)} {space.dtype}" if type(space).__name__ == "Box" else str(space)


def say(line: str) -> None:
    print(f"lightning_pg: {line}", file=sys.stderr, flush=True)


#: what Lightning and W&B print that a user of this program does not need (their own choices of hardware, an
#: advertisement, notes on choices made here on purpose); the start and end lines say what matters instead
QUIET = re.compile(r"GPU available|TPU available|HPU available|💡 Tip|will override existing callbacks|Seed set to")


def _quiet_logs(record: logging.LogRecord) -> bool:
    return not QUIET.search(str(record.msg))


def _mujoco_warnings_once(env_id: Any) -> None:
    """MuJoCo's compiler prints its warnings from C once per env it builds (the same line eight times for eight
    envs): for a MuJoCo env, each distinct warning is said once. A warning callback the user set stays."""
    import gymnasium

    try:
        entry_point = str(gymnasium.spec(str(env_id)).entry_point)
    except Exception:  # noqa: BLE001 - not a registered env id: the model's own check reports it
        return
    if "mujoco" not in entry_point:
        return
    try:
        import mujoco
    except ImportError:  # the model's env check says how to install it
        return

    if mujoco.get_mju_user_warning() is not None:
        return
    seen: set[str] = set()

    def once(message: str) -> None:
        if message not in seen:
            seen.add(message)
            print(f"MuJoCo warning: {message}", file=sys.stderr, flush=True)

    mujoco.set_mju_user_warning(once)


def _check_config_files(argv: list[str]) -> None:
    """Each ``--config`` file parses as YAML, or one paragraph naming the file, line and column (jsonargparse's
    own message names ``<unicode string>``)."""
    import yaml

    paths = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    paths += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    for path in paths:
        if not os.path.isfile(path):
            continue  # jsonargparse says "File does not exist"
        try:
            with open(path, encoding="utf-8") as f:
                yaml.safe_load(f)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"The config file {path} is not valid YAML: {problem}{where}. Fix: correct the YAML "
                              "there (`python -m lightning_pg fit --print_config` shows a valid layout).") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"The config file {path} cannot be read ({exc}). Fix: pass a readable UTF-8 YAML "
                              "file.") from None


def _user_error(exc: BaseException) -> str | None:
    """The one-paragraph message for a mistake in the user's input, or None for a bug."""
    seen = exc
    while seen is not None:  # jsonargparse wraps errors raised while instantiating the model
        if isinstance(seen, LightningPGError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, MisconfigurationException):  # trainer settings this machine cannot honour
        return (
            f"The trainer settings cannot run here: {' '.join(str(exc).split())} Fix: change the trainer options "
            "(for example --trainer.accelerator=cpu or auto, --trainer.devices=1, --trainer.precision=32-true), "
            "or run on a machine that has that device."
        )
    if isinstance(exc, ArgumentError):
        detail = " ".join(str(exc).split())
        if 'Parser key "env_wrappers"' in detail:  # jsonargparse's type check, before the model's own
            return ("--model.env_wrappers must be a list of {class_path, init_args} mappings, e.g. "
                    "[{class_path: gymnasium.wrappers.TimeLimit, init_args: {max_episode_steps: 100}}]. Fix: write "
                    "each wrapper that way in the config's model init_args (or on the command line).")
        command = re.search(r"invalid choice: '([^']*)'", detail) if "argument subcommand" in detail else None
        if command or 'expected "subcommand"' in detail:
            what = f"'{command.group(1)}' is not a command" if command else "No command was given"
            return (f"{what}. Fix: use one of fit, validate, test (Lightning's) or {', '.join(COMMANDS)}, e.g. "
                    "`python -m lightning_pg fit --config configs/ppo_cartpole.yaml`; `python -m lightning_pg "
                    "--help` says what each does.")
        unknown = re.search(r"class_path '([\w.]+)': Option '(\w+)' is not accepted", detail)
        if unknown:
            cls, option = unknown.groups()
            return (
                f"{cls.rsplit('.', 1)[-1]} has no hyperparameter '{option}'. Fix: correct or remove it; "
                f"`python -m lightning_pg fit --model.help {cls}` lists the accepted ones."
            )
        return (
            f"{detail}. Fix: check the config file and the command-line options "
            "(`python -m lightning_pg fit --help` lists them; `--print_config` shows the merged config)."
        )
    return None


#: Lightning's notes on choices made here on purpose: `training_step(dataloader_iter)` turns off its one-batch
#: prefetch (on-policy data must be collected after each update), and validate/test loaders are empty during
#: fit (evaluation runs on the env-step clock instead). The command line is a program of its own and hides them.
LIGHTNING_NOTES = (".*dataloader_iter.*", "Total length of .* across ranks is zero.*", ".*LeafSpec.*is deprecated.*")


def main(args: list[str] | None = None) -> None:
    for message in LIGHTNING_NOTES:
        warnings.filterwarnings("ignore", message=message)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                 "lightning_fabric.utilities.seed"):
        logging.getLogger(name).addFilter(_quiet_logs)
    # Everything imported so far (torch, torch._dynamo via Lightning, sympy, ~2,000 modules) lives as long as
    # the process: moved out of the cyclic GC's reach, later full collections and the interpreter's exit no
    # longer walk it, the interpreter's exit included. (`python -m lightning_pg` has frozen them already, see
    # __main__.py; this is for the `lightning-pg` script and callers of main().)
    gc.freeze()
    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv or os.environ.get("LIGHTNING_PG_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if args is None:
        sys.argv[1:] = argv  # parse them as sys.argv (LightningCLI warns when given both)
    try:
        if argv and argv[0] in COMMANDS:  # play, export, plot, tune: not Lightning's
            sys.exit(run_command(argv[0], argv[1:]) or 0)
        _check_config_files(argv)
        cli = RLCLI(args=None if args is None else argv)
    except StopRequested as exc:  # Ctrl+C twice, or a stop past its grace period: nothing saved, said where things stand
        if debug:
            raise
        print(f"lightning_pg: {exc}", file=sys.stderr, flush=True)
        sys.exit(128 + exc.signum)
    except Exception as exc:  # noqa: BLE001 - user errors get one paragraph, bugs keep their traceback
        message = _user_error(exc)
        if message is None or debug:
            raise
        print(f"lightning_pg: error: {message}", file=sys.stderr)
        sys.exit(2)
    finally:
        _release_unused_runs()
    model = getattr(cli, "model", None)
    if getattr(model, "stop_signal", None):
        sys.exit(128 + model.stop_signal)  # stopped by Ctrl+C/SIGTERM: checkpoint saved, run not finished


if __name__ == "__main__":
    main()
