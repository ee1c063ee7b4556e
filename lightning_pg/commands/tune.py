"""``python -m lightning_pg tune --config FILE --n_trials N``: an Optuna search over short fits of a config.

Each trial is a fit of the config with the trial's hyperparameters (``--model.*`` / ``--trainer.*`` options on
the command line go to every trial, e.g. ``--model.total_timesteps 20000``), run in this process through the
same :class:`~lightning_pg.cli.RLCLI` as ``fit``: a trial of a small config takes about a second, where a
process per trial would spend several seconds importing torch and Lightning first. What a fit changes in the
process is put back after each trial (torch's thread count, the environment variables it sets); each trial
seeds itself as a fit does (``--seed_everything`` or a fresh seed, kept in its config.yaml), and its worker
processes close with its fit. Its console goes to ``<root>/trial_<n>/console.log``; this console gets one line
per trial.

- The objective is the return of the trial's last evaluation (at the end of its budget), as in the RL Zoo: the
  policy the budget ends with. The best of a trial's evaluations would favour unstable settings that peak
  once by chance.
- Pruning: every evaluation is reported to Optuna at its env step (the multiple of the evaluation interval it
  crossed, so that trials with other rollout sizes compare at the same steps); when the pruner says so, the
  fit stops at that batch boundary and the trial is PRUNED.
- The search space: the config's top-level ``tune:`` section, or a default per algorithm (``DEFAULT_SPACES``,
  smaller than the RL Zoo's ``hyperparams_opt.py``). Combinations the algorithm refuses are repaired (PPO's and
  TRPO's ``batch_size`` becomes a divisor of the rollout ``n_steps * num_envs``); the trial records what ran.
- Resume: the study lives in ``--storage`` (by default ``sqlite:///<root>/study.db``); the same command again
  goes on with it. ``--n_trials`` counts the trials the study holds in all, so ``--n_trials 6`` after 4 runs 2
  more. A trial cut off by a kill (left RUNNING by a process that is gone) or by Ctrl+C is marked FAIL, not
  counted, and its hyperparameters are queued to run again.
"""
from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import shlex
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytorch_lightning as pl
import torch
import yaml

from lightning_pg.cli import RLCLI, _user_error
from lightning_pg.commands import CommandParser
from lightning_pg.errors import ConfigError

#: init arguments that set the task or how a trial is scored, not the agent: never searched
NOT_SEARCHED = ("env_id", "env_kwargs", "env_wrappers", "vectorization", "total_timesteps", "eval_every",
                "eval_episodes", "log_every")

_GAMMAS = [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]
_LAMBDAS = [0.8, 0.9, 0.95, 0.98, 1.0]
_GRAD_NORMS = [0.3, 0.5, 1.0, 2.0, 5.0]
_LEARNING_RATE = {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}
_ENT_COEF = {"type": "float", "low": 1e-8, "high": 0.1, "log": True}
_ROLLOUT_STEPS = [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
_OFF_POLICY = {
    "learning_rate": _LEARNING_RATE,
    "gamma": _GAMMAS,
    "batch_size": [64, 128, 256, 512],
    "buffer_size": [10_000, 100_000, 1_000_000],
    "tau": [0.001, 0.005, 0.01, 0.02, 0.05],
    "network": [[64, 64], [256, 256], [400, 300]],
}
#: search spaces used when the config has no ``tune:`` section, in its format, by algorithm (a subclass takes
#: its nearest base's); after the RL Zoo's ``sample_*_params``, with fewer dimensions
DEFAULT_SPACES: dict[str, dict[str, Any]] = {
    "PPO": {
        "learning_rate": _LEARNING_RATE,
        "n_steps": _ROLLOUT_STEPS,
        "batch_size": [32, 64, 128, 256, 512],
        "n_epochs": [1, 5, 10, 20],
        "gamma": _GAMMAS,
        "gae_lambda": _LAMBDAS,
        "clip_range": [0.1, 0.2, 0.3],
        "ent_coef": _ENT_COEF,
        "network": [[64], [64, 64], [256, 256]],
    },
    "TRPO": {
        "learning_rate": _LEARNING_RATE,
        "n_steps": _ROLLOUT_STEPS,
        "batch_size": [32, 64, 128, 256, 512],
        "gamma": _GAMMAS,
        "gae_lambda": _LAMBDAS,
        "target_kl": [0.005, 0.01, 0.02, 0.03, 0.05, 0.1],
        "n_critic_updates": [5, 10, 20, 30],
        "cg_max_steps": [5, 10, 20, 30],
        "network": [[64, 64], [256, 256]],
    },
    "A2C": {
        "learning_rate": _LEARNING_RATE,
        "n_steps": [5, 8, 16, 32, 64, 128],
        "gamma": _GAMMAS,
        "gae_lambda": _LAMBDAS,
        "ent_coef": _ENT_COEF,
        "vf_coef": {"type": "float", "low": 0.1, "high": 1.0},
        "max_grad_norm": _GRAD_NORMS,
        "normalize_advantage": [False, True],
        "use_rms_prop": [False, True],
    },
    "REINFORCE": {
        "learning_rate": _LEARNING_RATE,
        "gamma": _GAMMAS,
        "normalize_returns": [False, True],
        "max_grad_norm": [None, *_GRAD_NORMS],
        "network": [[64, 64], [256, 256]],
    },
    "SAC": _OFF_POLICY,
    "TD3": {**_OFF_POLICY, "noise_std": {"type": "float", "low": 0.05, "high": 0.5}},
    "DDPG": {**_OFF_POLICY, "action_noise": ["normal", "ornstein-uhlenbeck"],
             "noise_std": {"type": "float", "low": 0.05, "high": 0.5}},
}
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
SPEC_KEYS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"},
             "categorical": {"choices"}}


def build_parser() -> CommandParser:
    parser = CommandParser(
        "tune",
        "An Optuna search over short fits of a config: each trial fits it with the trial's hyperparameters and "
        "is scored by its last evaluation return; trials behind the others at an evaluation are pruned. Other "
        "--model.* / --trainer.* / --seed_everything options go to every trial (e.g. --model.total_timesteps "
        "20000 for short trials). The best trial is written as a config that `fit` runs. The trials' runs go "
        "under <root>: --trainer.default_root_dir, else runs/tune/<study name> (docs/howto/tune.md).",
        allow_abbrev=False)
    parser.add_argument("--config", required=True, help="the config to tune (its `tune:` section, if any, is the "
                        "search space; else the algorithm's default space)")
    parser.add_argument("--n_trials", type=int, required=True,
                        help="trials the study holds in all when done (a resumed study runs the rest)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds after which no new trial starts (the one running finishes)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="Optuna's TPE (default) or random")
    parser.add_argument("--pruner", choices=PRUNERS, default="median",
                        help="median (default): stop a trial whose evaluation is below the median of the complete "
                             "trials' at that env step, after the first third of its budget; none")
    parser.add_argument("--n_startup_trials", type=int, default=3,
                        help="trials sampled at random before TPE models the results, and trials that must "
                             "complete before the pruner compares (default 3)")
    parser.add_argument("--n_evaluations", type=int, default=10,
                        help="evaluations per trial, every total_timesteps / N env steps (default 10); an explicit "
                             "--model.eval_every wins")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage URL (default sqlite:///<root>/study.db); the same storage and study "
                             "name resume a search")
    parser.add_argument("--study_name", default=None, help="default: the config file's name")
    parser.add_argument("--output", default=None, help="the best trial's config (default <root>/best.yaml)")
    return parser


# ---- the search space -----------------------------------------------------------------------------------
@dataclass
class Parameter:
    """One searched hyperparameter: its Optuna distribution, and for categorical choices that are lists or
    mappings (Optuna stores scalars only) the value of each choice's JSON text."""

    distribution: Any
    decoded: dict[str, Any] | None = None

    def value(self, sampled: Any) -> Any:
        return self.decoded[sampled] if self.decoded is not None else sampled

    def describe(self) -> str:
        d = self.distribution
        if type(d).__name__ == "CategoricalDistribution":
            return "{" + ", ".join(str(self.value(c)) for c in d.choices) + "}"
        kind = "int" if type(d).__name__ == "IntDistribution" else "float"
        return f"{kind} [{d.low:g}, {d.high:g}]" + (" log" if d.log else "") + (
            f" step {d.step:g}" if d.step not in (None, 1) else "")


def parse_space(section: Any, accepted: list[str], where: str) -> dict[str, Parameter]:
    """The ``tune:`` section (``name: {type: float|int|categorical, ...}`` or ``name: [choice, ...]``) as
    :class:`Parameter` s, or a one-paragraph :class:`ConfigError` naming the entry and the fix."""
    import optuna.distributions as od

    if not isinstance(section, dict) or not section:
        raise ConfigError(f"The tune section of {where} must map hyperparameter names to distributions, e.g. "
                          "`tune: {learning_rate: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}}`. Fix: "
                          "write it that way, or remove it to search the algorithm's default space.")
    space = {}
    for key, spec in section.items():
        name = str(key).removeprefix("model.").removeprefix("init_args.")
        if name in NOT_SEARCHED:
            raise ConfigError(f"The tune section of {where} searches '{name}', which sets the task or how a trial "
                              "is scored, not the agent. Fix: remove it; give the trials' value on the command "
                              f"line instead (--model.{name} ...).")
        if name not in accepted:
            raise ConfigError(f"The tune section of {where} names '{key}', which is not a hyperparameter of this "
                              f"algorithm. Fix: use one of its names: {', '.join(accepted)}.")
        def bad(problem: str, spec: Any = spec, key: Any = key) -> ConfigError:
            return ConfigError(
                f"The tune section of {where}: '{key}' is {spec!r}: {problem.rstrip('.')}. Fix: write a "
                "distribution: {type: float, low: L, high: H, log: true|false, step: S}, {type: int, low: L, "
                "high: H, step: S, log: true|false} or {type: categorical, choices: [...]} (a plain list is the "
                "choices); a log scale takes no step.")

        if isinstance(spec, list):
            spec = {"type": "categorical", "choices": spec}
        if not isinstance(spec, dict) or spec.get("type") not in SPEC_KEYS:
            raise bad("not a distribution")
        kind = spec["type"]
        unknown = set(spec) - SPEC_KEYS[kind] - {"type"}
        if unknown:
            raise bad(f"{kind} takes {', '.join(sorted(SPEC_KEYS[kind]))}, not {', '.join(sorted(map(str, unknown)))}")
        try:
            if kind == "categorical":
                choices = spec.get("choices")
                if not isinstance(choices, list) or not choices:
                    raise ValueError("choices must be a non-empty list")
                if all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
                    space[name] = Parameter(od.CategoricalDistribution(choices))
                else:  # lists (network sizes) or mappings: stored as their JSON text
                    texts = [json.dumps(c) for c in choices]
                    space[name] = Parameter(od.CategoricalDistribution(texts), dict(zip(texts, choices)))
                continue
            low, high, log, step = spec.get("low"), spec.get("high"), bool(spec.get("log", False)), spec.get("step")
            number = int if kind == "int" else (int, float)
            if not all(isinstance(v, number) and not isinstance(v, bool) for v in (low, high)):
                raise ValueError(f"low and high must be {'integers' if kind == 'int' else 'numbers'}")
            if not low < high:
                raise ValueError("low must be below high")
            if log and low <= 0:
                raise ValueError("a log scale needs low > 0")
            if kind == "int":
                space[name] = Parameter(od.IntDistribution(low, high, log=log, step=1 if step is None else step))
            else:
                space[name] = Parameter(od.FloatDistribution(float(low), float(high), log=log, step=step))
        except ValueError as exc:  # (Optuna's own checks raise ValueError too: log with a step, a bad step)
            raise bad(str(exc)) from None
    return space


def default_space(model: Any, total_timesteps: int, eval_every: int) -> tuple[str, dict[str, Any]]:
    """The algorithm's default section (its nearest base's), with rollouts no longer than the interval between
    two evaluations, so that each evaluation sees a policy updated since the last: ``(algorithm, section)``."""
    for klass in type(model).__mro__:
        if klass.__name__ in DEFAULT_SPACES:
            section = dict(DEFAULT_SPACES[klass.__name__])
            if "n_steps" in section and eval_every > 0:
                num_envs = int(model.hparams.num_envs)
                choices = section["n_steps"]
                section["n_steps"] = [n for n in choices if n * num_envs <= eval_every] or choices[:1]
            return klass.__name__, section
    raise ConfigError(f"{type(model).__name__} has no default search space (there is one for "
                      f"{', '.join(DEFAULT_SPACES)} and their subclasses). Fix: give the config a `tune:` section "
                      "(docs/howto/tune.md).")


def repaired(hyperparameters: dict[str, Any], base: dict[str, Any], model_class: type) -> dict[str, Any]:
    """The trial's hyperparameters with combinations the algorithm refuses repaired: PPO's and TRPO's
    ``batch_size`` becomes the largest divisor of the rollout ``n_steps * num_envs`` not above it (the zoo
    clips it to n_steps)."""
    from lightning_pg.algorithms.on_policy import OnPolicyModule

    out = dict(hyperparameters)
    merged = {**base, **out}
    if issubclass(model_class, OnPolicyModule) and {"n_steps", "batch_size"} <= set(merged) and \
            {"n_steps", "batch_size", "num_envs"} & set(out):
        rollout = int(merged["n_steps"]) * int(merged.get("num_envs", 1))
        batch = min(int(merged["batch_size"]), rollout)
        out["batch_size"] = max(d for d in range(1, batch + 1) if rollout % d == 0)
    return out


# ---- trials -----------------------------------------------------------------------------------------------
class _Pruning(pl.Callback):
    """Reports each evaluation of the fit to its trial, and stops the fit when the pruner says so."""

    def __init__(self, trial: Any, every: int, total: int):
        self.trial, self.every, self.total = trial, every, total
        self.reported_at = -1
        self.pruned: tuple[int, float] | None = None  # (step, return) of the evaluation that pruned it

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        at = pl_module.evaluated_at
        if at < 0 or at == self.reported_at or pl_module.last_eval is None:
            return
        self.reported_at = at
        done = at >= self.total
        # the multiple of the interval this evaluation crossed: trials with other rollout sizes evaluate at
        # slightly different env steps, and the pruner compares trials at equal steps
        step = self.total if done or self.every <= 0 else at // self.every * self.every
        mean = float(pl_module.last_eval[0])
        self.trial.report(mean, step)
        if not done and self.trial.should_prune():
            self.pruned = (step, mean)
            trainer.should_stop = True


class _TrialCLI(RLCLI):
    """``fit`` as the command line runs it, with one more callback."""

    def __init__(self, callback: pl.Callback | None, args: list[str], run: bool = True):
        self._trial_callback = callback  # None: the check of the config before the trials (run=False)
        with warnings.catch_warnings():  # (that tune's own arguments are in sys.argv: they are not the fit's)
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            super().__init__(args=args, run=run)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Any:
        return super()._instantiate_trainer(config, [*callbacks, *filter(None, [self._trial_callback])])

    def _set_seed(self) -> None:
        if self._trial_callback is not None:  # (the check trains nothing: the process's random state stays)
            super()._set_seed()


@contextlib.contextmanager
def _console_to(path: Path) -> Iterator[None]:
    """This process's stdout and stderr (file descriptors 1 and 2: Python, C code and worker processes alike)
    into ``path`` for the block; ``sys.stdout``/``sys.stderr`` write to those descriptors meanwhile, also where
    something had replaced them (a notebook, pytest). A stream kept past the block writes to the console again."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    streams = [open(fd, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False) for fd in (1, 2)]
    try:
        with open(path, "a", encoding="utf-8") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        with contextlib.redirect_stdout(streams[0]), contextlib.redirect_stderr(streams[1]):
            yield
    finally:
        for stream in streams:
            stream.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def _isolated() -> Iterator[None]:
    """Put back what a fit changes in the process: torch's thread count (``torch_threads``), the environment
    variables it sets (the run folder it hands its workers, the seed), and free its objects."""
    threads, environ = torch.get_num_threads(), dict(os.environ)
    try:
        yield
    finally:
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.finish()  # else the next trial's WandbLogger would log into this trial's run
        torch.set_num_threads(threads)
        for name in set(os.environ) - set(environ):
            del os.environ[name]
        os.environ.update(environ)
        gc.collect()


def _yaml(value: Any) -> str:
    """A value as the command line (jsonargparse) reads it back: YAML flow style, ``1.0e-05`` not ``1e-05``."""
    return yaml.safe_dump(value, default_flow_style=True, width=math.inf).removesuffix("\n").removesuffix(
        "\n...")


def _shown(hyperparameters: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in hyperparameters.items())


def _option(args: list[str], name: str) -> str | None:
    """The value of ``--name`` among command-line arguments (``--name V`` or ``--name=V``; the last wins)."""
    found = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith(name + "="):
            found = arg.split("=", 1)[1]
    return found


def _without(args: list[str], name: str) -> list[str]:
    """Command-line arguments less ``--name V`` and ``--name=V``."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


@dataclass
class Search:
    """What every trial shares."""

    config: str
    passthrough: list[str]
    root: Path
    space: dict[str, Parameter]
    base: dict[str, Any]  # the config's hyperparameters, command-line options applied
    model_class: type
    total: int
    eval_every: int
    set_eval_every: bool  # whether the trials get --model.eval_every (not given on the command line)

    def run_trial(self, study: Any, trial: Any) -> tuple[str, int | None]:
        """Fit one trial and tell the study how it ended: ``(its console line, exit status to stop with or
        None)``."""
        import optuna

        hyper = repaired({k: self.space[k].value(v) for k, v in trial.params.items()}, self.base, self.model_class)
        trial.set_user_attr("hyperparameters", hyper)
        trial.set_user_attr("owner", [socket.gethostname(), os.getpid()])
        folder = self.root / f"trial_{trial.number}"
        folder.mkdir(parents=True, exist_ok=True)
        args = ["fit", "--config", self.config, *_without(self.passthrough, "--trainer.default_root_dir")]
        if self.set_eval_every:
            args.append(f"--model.eval_every={self.eval_every}")
        if _option(self.passthrough, "--trainer.logger") is None:
            args.append("--trainer.logger=false")  # W&B off for trials unless asked for
        args += [f"--trainer.default_root_dir={folder}", *(f"--model.{k}={_yaml(v)}" for k, v in hyper.items())]
        pruning = _Pruning(trial, self.eval_every, self.total)
        start, cli, error = time.perf_counter(), None, None
        line = f"trial {trial.number}: {_shown(hyper)} -> "
        try:
            with _isolated(), _console_to(folder / "console.log"):
                print(f"tune: trial {trial.number} of the study '{study.study_name}' is this fit:\n  python -m "
                      f"lightning_pg {' '.join(shlex.quote(a) for a in args)}", flush=True)
                try:
                    cli = _TrialCLI(pruning, args)
                except Exception as exc:  # noqa: BLE001 - a user error fails the trial; a bug stops the search
                    error = _user_error(exc)
                    if error is None:
                        raise
                    print(f"lightning_pg: error: {error}", file=sys.stderr, flush=True)
        except Exception:  # a bug: the trial failed, the search stops with the traceback
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        except BaseException:  # Ctrl+C twice (StopRequested), Ctrl+C outside the training loop, SystemExit
            self.interrupted(study, trial)
            raise
        seconds = f"{time.perf_counter() - start:.1f} s"
        model = getattr(cli, "model", None)
        if cli is not None:
            trial.set_user_attr("run", str(cli.trainer.default_root_dir))
            trial.set_user_attr("seed", cli.config["fit"].get("seed_everything"))
        if error is not None:
            trial.set_user_attr("error", error)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return f"{line}failed, {seconds}: {error}", None
        if model.stop_signal:  # Ctrl+C/SIGTERM: the fit saved and stopped; the search stops too
            self.interrupted(study, trial)
            return (f"{line}stopped at {model.num_timesteps:,} env steps, {seconds}; queued to run again: the same "
                    "command resumes the search", 128 + model.stop_signal)
        if pruning.pruned is not None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            step, mean = pruning.pruned
            return f"{line}pruned at {step:,} env steps (return {mean:.1f}), {seconds}", None
        value = float(model.last_eval[0])
        study.tell(trial, value)
        return f"{line}{value:.1f}, {seconds}", None

    @staticmethod
    def interrupted(study: Any, trial: Any) -> None:
        """A trial cut off: FAIL, left out of the count, its hyperparameters queued to run again."""
        import optuna

        with contextlib.suppress(Exception):  # (already told)
            trial.set_user_attr("interrupted", True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number})


def counted(study: Any) -> list[Any]:
    """The trials ``--n_trials`` counts: finished ones, less those cut off (queued to run again)."""
    return [t for t in study.get_trials(deepcopy=False)
            if t.state.is_finished() and not t.user_attrs.get("interrupted")]


def requeue_cut_off(study: Any) -> list[int]:
    """RUNNING trials of this machine whose process is gone (killed) become FAIL and are queued again; their
    numbers. Another machine's are left to it (only it can tell whether their process lives)."""
    import optuna

    host, numbers = socket.gethostname(), []
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = frozen.user_attrs.get("owner")
        if owner and (owner[0] != host or (owner[1] != os.getpid() and _alive(int(owner[1])))):
            continue  # another tune process is running it
        Search.interrupted(study, optuna.trial.Trial(study, frozen._trial_id))
        numbers.append(frozen.number)
    return numbers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_study(storage: str, name: str, sampler: str, pruner: str, startup: int, warmup: int,
               seed: int | None) -> Any:
    import optuna

    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
    except Exception as exc:  # noqa: BLE001 - a bad URL, a missing driver, an unreachable server or folder
        raise ConfigError(f"--storage {storage} cannot be opened ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:300]}). Fix: pass a reachable database URL, e.g. "
                          "sqlite:///tune.db (a file in an existing folder).") from None
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ConfigError(f"The study '{name}' in {storage} minimizes its objective; tune maximizes the return. "
                          "Fix: pass another --study_name.")
    # seeded: the search repeats; offset by the trials already there, so a resumed search draws new points
    seed = None if seed is None else seed + len(study.get_trials(deepcopy=False))
    if sampler == "tpe":
        study.sampler = optuna.samplers.TPESampler(n_startup_trials=startup, seed=seed)
    else:
        study.sampler = optuna.samplers.RandomSampler(seed=seed)
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup) \
        if pruner == "median" else optuna.pruners.NopPruner()
    return study


def write_best(path: Path, config: str, hyperparameters: dict[str, Any], header: list[str]) -> None:
    """The config file with the best hyperparameters in ``model.init_args`` (its ``tune:`` section kept, so
    the result can be tuned again; YAML comments are not kept), ``header`` as its first comment lines."""
    with open(config, encoding="utf-8") as file:
        data = yaml.safe_load(file) or {}
    model = data.setdefault("model", {})
    init_args = model.setdefault("init_args", {}) if "class_path" in model or "init_args" in model else model
    init_args.update(hyperparameters)
    text = "".join(f"# {line}\n" for line in header) + yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


class _Dumper(yaml.SafeDumper):
    """Mappings in block style, lists in flow style (``network: [64, 64]``), as the configs are written."""


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=True))


def _check_base(config: str, passthrough: list[str]) -> Any:
    """The config with the trials' options, parsed and built once as a fit would (no training, nothing
    written): its mistakes are the user's, reported before any trial; the model gives the algorithm and its
    hyperparameters. What Lightning says meanwhile (the precision it uses, ...) each trial's console has."""
    threads = torch.get_num_threads()
    try:
        with _console_to(Path(os.devnull)):
            return _TrialCLI(None, ["--config", config, *passthrough, "--trainer.logger=false"], run=False)
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str]) -> int:
    import optuna

    args, passthrough = build_parser().parse_known_args(argv)
    for value, name, least in ((args.n_trials, "--n_trials", 1), (args.n_evaluations, "--n_evaluations", 1),
                               (args.n_startup_trials, "--n_startup_trials", 0)):
        if value < least:
            raise ConfigError(f"{name} {value}: it must be an integer >= {least}. Fix: pass {name} {max(least, 1)} "
                              "or more.")
    if args.timeout is not None and not args.timeout > 0:
        raise ConfigError(f"--timeout {args.timeout}: it must be a positive number of seconds. Fix: pass a positive "
                          "number, or leave it out to run every trial.")
    if passthrough and not passthrough[0].startswith("--"):
        raise ConfigError(f"tune got '{passthrough[0]}' where an option was expected. Fix: pass options only "
                          "(`python -m lightning_pg tune --help` lists tune's; --model.*, --trainer.* go to "
                          "every trial).")
    if _option(passthrough, "--ckpt_path") is not None:
        raise ConfigError("tune got --ckpt_path: every trial trains from scratch. Fix: remove it.")

    cli = _check_base(args.config, passthrough)
    if cli.trainer.world_size > 1:  # a launched rank would rerun this command: a second search, hung in a collective
        raise ConfigError(f"tune runs each trial inside its own process, but the trainer options ask for "
                          f"{cli.trainer.world_size} processes (DDP). Fix: leave --trainer.devices/--trainer.num_nodes "
                          "at 1 for tune (run several tune processes on one --storage to search in parallel), and "
                          "scale out the fit of the best config.")
    model, config = cli.model, cli.config
    total = int(model.hparams.total_timesteps)
    explicit = _option(passthrough, "--model.eval_every") or _option(passthrough, "--model.init_args.eval_every")
    eval_every = int(model.hparams.eval_every) if explicit is not None else max(1, total // args.n_evaluations)
    if eval_every < 0:
        raise ConfigError(f"--model.eval_every {eval_every} turns evaluation off, and a trial is scored and pruned "
                          "by its evaluations. Fix: leave --model.eval_every out (tune evaluates each trial "
                          "--n_evaluations times) or give it a number of env steps.")
    accepted = sorted(k for k in model.hparams if not k.startswith("_") and k not in NOT_SEARCHED)
    section = config.get("tune")
    if section is None:
        origin, section = default_space(model, total, eval_every)
        origin = f"{origin}'s default"
    else:
        origin = "the config's tune section"
    space = parse_space(section, accepted, args.config)
    base = {k: v for k, v in model.hparams.items() if not k.startswith("_")}
    model_class = type(model)
    seed = config.get("seed_everything")
    del cli, model
    gc.collect()

    study_name = args.study_name or Path(args.config).stem
    root = Path(_option(passthrough, "--trainer.default_root_dir") or os.path.join("runs", "tune", study_name))
    if args.storage is None:
        root.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{root / 'study.db'}"
    output = Path(args.output) if args.output else root / "best.yaml"
    search = Search(args.config, passthrough, root, space, base, model_class, total, eval_every, explicit is None)

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # this console says what each trial did, once
    try:
        study = open_study(storage, study_name, args.sampler, args.pruner, args.n_startup_trials, total // 3,
                           seed if isinstance(seed, int) and not isinstance(seed, bool) else None)
        cut_off = requeue_cut_off(study)
        done = len(counted(study))
        print(f"tune: study '{study_name}' in {storage}: {done} of {args.n_trials} trials done"
              + (f" (trial {', '.join(map(str, cut_off))} was cut off: queued to run again)" if cut_off else "")
              + f"; trials of {total:,} env steps, evaluated every {eval_every:,}; sampler {args.sampler}, pruner "
              f"{args.pruner}" + (f" (once {args.n_startup_trials} trials are complete, from {total // 3:,} env "
                                  "steps on)" if args.pruner == "median" else "")
              + f"; each trial's console in {root}/trial_<n>/console.log", flush=True)
        print(f"tune: search space ({origin}): " + "; ".join(f"{k} {p.describe()}" for k, p in space.items()),
              flush=True)
        distributions = {k: p.distribution for k, p in space.items()}
        deadline = time.monotonic() + args.timeout if args.timeout else None
        try:
            while len(counted(study)) < args.n_trials and (deadline is None or time.monotonic() < deadline):
                trial = study.ask(fixed_distributions=distributions)
                line, status = search.run_trial(study, trial)
                print(line, flush=True)
                if status is not None:
                    return status
            left = args.n_trials - len(counted(study))
            if left > 0:
                print(f"tune: --timeout {args.timeout:g} s reached with {left} trials to go: the same command goes "
                      "on with them", flush=True)
        except KeyboardInterrupt:  # Ctrl+C outside a trial's training loop (which stops at a batch boundary)
            print("tune: stopped by Ctrl+C; the trial that was starting is queued to run again: the same command "
                  "resumes the search", file=sys.stderr, flush=True)
            return 130
        return report_best(study, search, output, storage)
    finally:
        optuna.logging.set_verbosity(verbosity)


def report_best(study: Any, search: Search, output: Path, storage: str) -> int:
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        ended = counted(study)
        states = [t.state for t in ended]
        errors = [t.user_attrs["error"].split(" Fix:")[0] for t in ended if "error" in t.user_attrs]
        raise ConfigError(
            f"No trial of the study '{study.study_name}' completed: {states.count(optuna.trial.TrialState.FAIL)} "
            f"failed, {states.count(optuna.trial.TrialState.PRUNED)} pruned" + (
                f"; the last failure: {errors[-1].rstrip('.')}" if errors else "") + ". Fix: correct the search "
            "space or the trials' options, or run more trials (--n_trials).")
    best = study.best_trial
    hyper = best.user_attrs.get("hyperparameters") or {k: search.space[k].value(v) for k, v in best.params.items()
                                                       if k in search.space}
    states = [t.state for t in counted(study)]
    print(f"tune: {len(states)} trials: {states.count(optuna.trial.TrialState.COMPLETE)} complete, "
          f"{states.count(optuna.trial.TrialState.PRUNED)} pruned, {states.count(optuna.trial.TrialState.FAIL)} "
          f"failed; best: trial {best.number}, return {best.value:.1f}: {_shown(hyper)}", flush=True)
    header = [f"tune: the best trial ({best.number}, last evaluation return {best.value:.1f} after "
              f"{search.total:,} env steps) of the study '{study.study_name}' in {storage};",
              "its hyperparameters are written into model.init_args below. Options the trials also ran with (not "
              "applied here): " + (" ".join(search.passthrough) or "none") + ".",
              f"Train it: python -m lightning_pg fit --config {output}"]
    write_best(output, search.config, hyper, header)
    print(f"tune: wrote {output}: python -m lightning_pg fit --config {output}", flush=True)
    return 0
