"""The spine every algorithm shares: env spec, env-step budget, the training step, logging, evaluation.

An algorithm subclasses :class:`RLModule` and provides four things:

- ``make_data()``: the environment-driven iterable (episodes, rollouts or replay samples) that Lightning
  drives as the train dataloader. Each batch is a dict of tensors plus ``env_steps`` (steps it took).
- ``update(batch)``: every gradient step for that batch (manual optimization: several optimizer steps may
  run inside one ``training_step``, which also takes several small batches, so Lightning's per-step overhead
  is paid once per 256 env steps at most); returns
  detached metrics named as logged (``loss/policy``, ``ppo/approx_kl``, ...).
- ``act(obs, deterministic)``: raw actions for a batch of observations (no autograd).
- ``configure_optimizers()``.
"""
from __future__ import annotations

import io
import math
import os
import time
from typing import Any, Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from gymnasium import spaces
from lightning_fabric.utilities.apply_func import move_data_to_device
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import SumMetric

from lightning_pg.data.base import EnvSettings
from lightning_pg.envs import VECTORIZATIONS, check_spaces, flatten_observations, make_env
from lightning_pg.errors import ConfigError, EnvError, TrainingDiverged
from lightning_pg.networks.encoders import has_images
from lightning_pg.optim import adam, contiguous
from lightning_pg.optimizer_steps import OptimizerSteps, let_backward_leave_parameters_out
from lightning_pg.schedules import ScheduleSpec, crossed, parse_schedule
from lightning_pg.trust import check_saved_hyperparameters, read_checkpoint

EVAL_SEED = 1_000_000  # evaluation episodes start from the same states every time: comparable across evals
#: the layout of lightning_pg's checkpoints; 2 since the on-policy rework (stacked bodies, [in, out] heads)
CHECKPOINT_FORMAT = 2
DEFAULT_NETWORK = [64, 64]  # hidden sizes of each MLP when ``network`` is not given


def available_memory() -> int | None:
    """Bytes this machine can still give: Linux's MemAvailable, else the physical memory, None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**27 else f"{n / 2**20:.0f} MiB"


def check(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(
            f"Invalid hyperparameter {name}={value!r}: it must be {expected}. Fix: set it in the model's "
            f"init_args in your config, on the command line (--model.{name}=...), or in the constructor."
        )


class RLModule(pl.LightningModule):
    """Base class of every lightning_pg algorithm (not used alone).

    Args:
        env_id: a registered gymnasium id, or ``"package.module:ClassName"``.
        env_kwargs: keyword arguments for ``gymnasium.make`` (e.g. ``max_episode_steps``).
        env_wrappers: ``gymnasium.Wrapper`` classes applied to each env in order, right after
            ``gymnasium.make``, training and evaluation envs alike: a list of ``{class_path, init_args}``, e.g.
            ``[{class_path: gymnasium.wrappers.TimeLimit, init_args: {max_episode_steps: 100}}]``. An entry with
            ``training_only: true`` wraps the training envs only (e.g. reward clipping: evaluation reports the
            env's own return).
        num_envs: environment copies stepped together (>= 1).
        vectorization: ``"sync"`` steps them one after the other in this process; ``"async"`` steps them in
            worker processes in parallel, one per core, each stepping its share of them (worth it when an env
            step costs more than about 0.1 ms, see the README; async envs are not saved in checkpoints: a
            resumed run reseeds them).
        total_timesteps: budget in env steps, summed over envs and ranks; training stops when reached.
        gamma: discount factor in [0, 1].
        learning_rate: optimizer step size (> 0), or ``"lin_X"`` to decay linearly from X to 0.
        eval_every: env steps between evaluations during fit (0: only at the end, -1: never).
        eval_episodes: episodes per evaluation (>= 1).
        network: hidden layer sizes of each MLP, e.g. ``[64, 64]``.
        log_every: env steps between two writes of training metrics to the loggers (>= 1).
        video_every: env steps between two videos during fit (0 or null: none). Each is one deterministic
            evaluation episode (from evaluation's first start state), written to
            ``<run folder>/videos/step_<N>.mp4`` (the trainer's ``default_root_dir``) and logged to W&B as
            ``eval/video``; the env must draw rgb_array frames. It leaves training's random streams as they were.
    """

    #: action spaces the algorithm can act in; checked when the module is built
    supported_action_spaces: tuple[type[spaces.Space], ...] = (spaces.Discrete, spaces.Box, spaces.MultiDiscrete,
                                                               spaces.MultiBinary)
    #: whether the algorithm needs finite action bounds (it squashes or rescales into them)
    needs_bounded_actions = False
    #: MLPs of ``network``'s sizes the algorithm keeps (policy, value, critics, target copies): the memory estimate
    network_copies = 2

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any] | None = None,
        env_wrappers: list[dict[str, Any]] | None = None,
        num_envs: int = 1,
        vectorization: str = "sync",
        total_timesteps: int = 100_000,
        gamma: float = 0.99,
        learning_rate: float | str = 3e-4,
        eval_every: int = 10_000,
        eval_episodes: int = 10,
        network: list[int] | None = None,
        log_every: int = 1_000,
        video_every: int | None = 0,
    ):
        super().__init__()
        # Records the subclass's __init__ arguments too (Lightning walks the __init__ frames up the MRO).
        self.save_hyperparameters()
        self.automatic_optimization = False
        check(isinstance(env_id, str) and env_id != "", "env_id", env_id, "a gymnasium id such as 'CartPole-v1'")
        check(env_kwargs is None or isinstance(env_kwargs, dict), "env_kwargs", env_kwargs, "a mapping or null")
        check(isinstance(num_envs, int) and num_envs >= 1, "num_envs", num_envs, "an integer >= 1")
        check(vectorization in VECTORIZATIONS, "vectorization", vectorization, " or ".join(map(repr, VECTORIZATIONS)))
        check(total_timesteps > 0, "total_timesteps", total_timesteps, "a positive number of env steps")
        check(0.0 <= gamma <= 1.0, "gamma", gamma, "in [0, 1]")
        lr = parse_schedule(learning_rate)
        check(lr is not None and lr(1.0) > 0, "learning_rate", learning_rate, "> 0, or a schedule such as 'lin_1e-3'")
        check(eval_every >= -1, "eval_every", eval_every, "a number of env steps (0: only at the end, -1: never)")
        check(eval_episodes >= 1, "eval_episodes", eval_episodes, "an integer >= 1")
        check(
            network is None or all(isinstance(n, int) and n > 0 for n in network),
            "network", network, "a list of positive layer sizes such as [64, 64]",
        )
        check(log_every >= 1, "log_every", log_every, "an integer >= 1")
        check(video_every is None or type(video_every) is int and video_every >= 0, "video_every", video_every,
              "a number of env steps between videos (0 or null: none)")
        self.network = list(network if network is not None else DEFAULT_NETWORK)

        env = make_env(env_id, env_kwargs, env_wrappers)
        self.observation_space, self.action_space = env.observation_space, env.action_space
        #: the env's own observation space, which predict() takes (observation_space is what the networks see:
        #: the same, or its flat float32 form for Discrete, MultiDiscrete, MultiBinary, Dict and Tuple)
        self.raw_observation_space = getattr(env, "raw_space", env.observation_space)
        env.close()
        if any(item.get("training_only") for item in env_wrappers or ()):  # evaluation envs must fit the networks
            evaluation = make_env(env_id, env_kwargs, env_wrappers, training=False)
            spaces_ = (evaluation.observation_space, evaluation.action_space)
            evaluation.close()
            if spaces_ != (self.observation_space, self.action_space):
                raise EnvError(
                    f"The training_only env wrappers change the spaces of '{env_id}': training envs have "
                    f"{self.observation_space} and {self.action_space}, evaluation envs {spaces_[0]} and "
                    f"{spaces_[1]}, and one policy plays both. Fix: apply wrappers that change the spaces to "
                    "every env (drop their training_only)."
                )
        if isinstance(self.action_space, spaces.Box):  # bounds as tensors: forward() clips in exportable code
            self.register_buffer("action_low", torch.as_tensor(self.action_space.low), persistent=False)
            self.register_buffer("action_high", torch.as_tensor(self.action_space.high), persistent=False)
        else:
            self.action_low = self.action_high = None
        check_spaces(
            type(self).__name__, self.observation_space, self.action_space,
            self.supported_action_spaces, env_id, self.needs_bounded_actions,
        )

        self.check_first_batch(num_envs, "num_envs")
        self._memory_said: set[str] = set()
        self.check_memory(self._network_memory())

        self.log_due = True  # set per batch in training: whether update() should compute its logged diagnostics
        self.num_timesteps = 0  # env steps taken so far, all envs and ranks (SB3's name); checkpointed
        self.stop_signal: int | None = None  # set by the checkpoint callback when Ctrl+C/SIGTERM stopped the fit
        self.last_eval: tuple[float, float] | None = None
        self.evaluated_at = -1  # num_timesteps of the latest evaluation (the checkpoint callback watches it)
        self._episode_returns: list[float] = []
        self._episode_lengths: list[int] = []
        # sums of the episodes' returns and lengths and their count between two writes, over every rank (synced
        # when written: every rank writes at the same env step); float64, and not submodules, so that no
        # precision's cast of the module rounds them; not in the checkpoint
        self._episode_sums = [SumMetric().set_dtype(torch.float64) for _ in range(3)]
        self.last_episode_return: float | None = None
        self._log_clock = (0, time.perf_counter())
        self._checkpoint_data_state: list[dict[str, Any]] | None = None  # the train iterable's, see on_train_start

    # ---- sizes checked at start --------------------------------------------------------------------------
    def check_first_batch(self, env_steps: int, made_of: str) -> None:
        """Refuse a first batch larger than the whole budget (the run would overshoot it that many times)."""
        total = self.hparams.total_timesteps
        if env_steps > total:
            raise ConfigError(
                f"Each batch of {type(self).__name__} takes at least {env_steps} env steps ({made_of}), more than "
                f"total_timesteps={total}: the run would overshoot its budget {env_steps / total:.0f}-fold. Fix: "
                f"lower num_envs (or the steps per env per batch), or raise total_timesteps above {env_steps}."
            )

    def check_memory(self, parts: dict[str, int]) -> None:
        """Refuse sizes whose memory (estimated from the settings, before anything is allocated) exceeds what
        this machine has available; say what a run of more than 1 GiB takes."""
        need, have = sum(parts.values()), available_memory()
        detail = ", ".join(f"{what} about {gib(n)}" for what, n in parts.items())
        if have is not None and need > have:
            raise ConfigError(
                f"{type(self).__name__} with these settings needs {detail}: more than the {gib(have)} of memory "
                "available here. Fix: make network, n_steps * num_envs or buffer_size smaller (whichever is large "
                "above), or run on a machine with more memory."
            )
        if need >= 2**30 and detail not in self._memory_said:
            self._memory_said.add(detail)
            rank_zero_info(f"{type(self).__name__}: {detail}.")

    def check_fit_memory(self) -> None:
        self.check_memory({**self._network_memory(), **self.fit_memory()})

    def fit_memory(self) -> dict[str, int]:
        """What training allocates beyond the networks (rollouts, a replay buffer): ``{what: bytes}``, checked
        by the CLI before the run and before the data is made; loading and evaluating do not need it."""
        return {}

    def _network_memory(self) -> dict[str, int]:
        """float32 weights, gradients and two Adam moments of ``network_copies`` MLPs of ``network``'s sizes."""
        obs = 0 if has_images(self.raw_observation_space) else int(np.prod(self.observation_space.shape))
        space = self.action_space
        act = int(space.n if isinstance(space, spaces.Discrete) else space.nvec.sum()
                  if isinstance(space, spaces.MultiDiscrete) else np.prod(space.shape or (1,)))
        sizes = [obs + act, *self.network, act]
        params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
        return {"the networks and their optimizer state": params * 4 * 4 * self.network_copies}

    # ---- what each algorithm provides -------------------------------------------------------------------
    def make_data(self) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def update(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        raise NotImplementedError

    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        raise NotImplementedError

    # ---- acting ---------------------------------------------------------------------------------------------
    def env_actions(self, actions: Tensor | np.ndarray) -> np.ndarray:
        """What the env receives: raw actions clipped into a Box's bounds (the raw ones stay in the batch)."""
        if isinstance(actions, Tensor):
            actions = actions.detach().cpu().numpy()
        space = self.action_space
        if isinstance(space, spaces.Box):
            return np.clip(actions, space.low, space.high)
        if isinstance(space, spaces.Discrete):  # indices 0..n-1 -> the env's start..start+n-1
            return actions + space.start if space.start else actions
        if isinstance(space, spaces.MultiDiscrete):
            return (actions.reshape(-1, *space.shape) + space.start).astype(space.dtype)
        if isinstance(space, spaces.MultiBinary):
            return actions.reshape(-1, *space.shape).astype(space.dtype)
        return actions

    @torch.no_grad()
    def predict(self, observation: Any, deterministic: bool = True) -> np.ndarray:
        """Actions for one observation or a batch, numpy in and numpy out, same rank (SB3's convention)."""
        if self.raw_observation_space is not self.observation_space:
            obs, single = flatten_observations(self.raw_observation_space, observation)
        else:
            obs = np.asarray(observation, dtype=self.observation_space.dtype)
            single = obs.ndim == len(self.observation_space.shape)
            obs = obs[None] if single else obs
        actions = self.policy_actions(obs, deterministic)
        return actions.squeeze(0) if single else actions

    def policy_actions(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        """The env's actions for a batch of observations as the networks take them (``evaluate`` acts with it
        on its envs' observations, ``predict`` after flattening the user's)."""
        return self.env_actions(self.act_on_array(obs, deterministic))

    def act_on_array(self, obs: np.ndarray, deterministic: bool) -> Tensor | np.ndarray:
        """``act`` on a numpy batch of observations (what ``predict`` and ``evaluate`` act with)."""
        return self.act(torch.as_tensor(obs, device=self.device), deterministic)

    # ---- Lightning hooks --------------------------------------------------------------------------------
    @property
    def budget_reached(self) -> bool:
        return self.num_timesteps >= self.hparams.total_timesteps

    @property
    def env_settings(self) -> EnvSettings:
        """The training envs: ``(env_id, env_kwargs, num_envs, env_wrappers)`` (per rank)."""
        return EnvSettings(self.hparams.env_id, self.hparams.env_kwargs, self.hparams.num_envs,
                           self.hparams.env_wrappers, self.hparams.vectorization)

    def train_dataloader(self) -> Iterator[dict[str, Any]]:
        # The iterable itself, not a DataLoader: it yields whole batches, and Lightning checkpoints its state.
        self.check_fit_memory()
        self._train_data = self.make_data()
        return self._train_data

    def teardown(self, stage: str) -> None:
        """Close a train iterable that holds worker processes (async envs, A3C's workers). (Sync envs stay, so
        that a second fit of this model goes on with its episodes, as its replay buffer does.)"""
        data = getattr(self, "_train_data", None)
        if data is not None and data.holds_processes:
            data.close()

    #: a ``training_step`` takes batches until it holds this many env steps, or until something needs
    #: Lightning's batch end: an evaluation (best.ckpt), a due ``last.ckpt``, the budget, a stop request.
    #: A2C's 40-step rollouts would otherwise pay Lightning's loop (callbacks and fetcher included)
    #: 2,500 times per 100k env steps, a tenth of the A2C update. So per-batch Trainer settings and callbacks
    #: (``max_steps``, ``limit_train_batches``, ``on_train_batch_end``) count groups; set this to 1 for one
    #: batch per step.
    env_steps_per_training_step = 256

    def training_step(self, dataloader_iter: Iterator) -> None:
        # Taking `dataloader_iter` turns off Lightning's one-batch prefetch: the next rollout must be
        # collected AFTER this update, with the updated policy (on-policy correctness).
        start = self.num_timesteps
        while True:
            batch, _, _ = next(dataloader_iter)
            before = self.num_timesteps
            evaluated = self._train_on(batch)
            if (evaluated or self.trainer.should_stop or self._stop_requested() or self._checkpoint_due(before)
                    or self.num_timesteps - start >= self.env_steps_per_training_step):
                return  # Lightning's batch end now saves best.ckpt / last.ckpt with these very weights

    def _checkpoint_due(self, before: int) -> bool:
        """Whether the last batch crossed a checkpoint callback's ``every_n_env_steps`` (the same on every rank)."""
        return any(crossed(before, self.num_timesteps, getattr(cb, "every_n_env_steps", 0) or 0)
                   for cb in self.trainer.checkpoint_callbacks)

    def _train_on(self, batch: dict[str, Any]) -> bool:
        """Account for one batch, update on it, log and evaluate when due; True when it evaluated."""
        if self.device.type != "cpu":  # the iterables build batches on the module's device; this is the guard
            batch = move_data_to_device(batch, self.device)
        before = self.num_timesteps
        self.num_timesteps += self._sum_over_ranks(int(batch.pop("env_steps")))
        self._record_episodes(batch.pop("episode_returns", ()), batch.pop("episode_lengths", ()))
        done = self.num_timesteps >= self.hparams.total_timesteps
        # whether this batch's metrics get written: update() computes its diagnostics only then
        self.log_due = done or crossed(before, self.num_timesteps, self.hparams.log_every)
        metrics = self.update(batch)
        self._check_finite(metrics)
        if done:
            self.trainer.should_stop = True
        if self.log_due:
            self._write_metrics(metrics)
        if crossed(before, self.num_timesteps, self.hparams.video_every or 0):
            self.record_video()
        every = self.hparams.eval_every
        if every >= 0 and (done or crossed(before, self.num_timesteps, every)):
            self.run_evaluation()
            return True
        return False

    def _stop_requested(self) -> bool:
        """Ctrl+C/SIGTERM was noted by the checkpoint callback: end the training_step, so it saves now.

        Single-process only: ranks receive a signal at different moments, and a rank that left the loop
        early would wait in a collective for the others.
        """
        return self.trainer.world_size == 1 and any(
            getattr(cb, "stop_signal", None) is not None for cb in self.trainer.checkpoint_callbacks)

    def _check_finite(self, metrics: dict[str, Tensor]) -> None:
        """Stop on a non-finite loss before anything is saved (one host sync per batch, not per update)."""
        # the sum is NaN or infinite when any term is (a few scalar adds, where stacking the terms took 4x longer)
        if not metrics or math.isfinite(float(sum(metrics.values()))):
            return
        bad = ", ".join(f"{k}={float(v)}" for k, v in metrics.items() if not math.isfinite(float(v)))
        if bad:  # (else finite terms whose float32 sum overflowed)
            raise TrainingDiverged(
                f"Training diverged at {self.num_timesteps} env steps: {bad}. Nothing was saved from this "
                "point, so the last checkpoint holds the last good weights. Fix: lower learning_rate, set "
                "max_grad_norm, or normalize observations/rewards; then resume with --ckpt_path last."
            )

    def on_train_epoch_end(self) -> None:
        if self.budget_reached:
            self.trainer.should_stop = True

    def optimized_parameters(self, module: nn.Module | None = None) -> list[nn.Parameter]:
        """Parameters to hand the optimizer: one contiguous tensor on a single device (see ``contiguous``).

        Under DDP and other sharding strategies the parameters stay as they are (the strategy owns them).
        """
        params = list((module or self).parameters())
        if self._trainer is not None and isinstance(self.trainer.strategy, SingleDeviceStrategy):
            return contiguous(params)
        return params

    def adam(self, params: Any, lr: float, **kwargs: Any) -> torch.optim.Adam:
        """``adam`` for this trainer: not fused under float16 AMP, whose gradient scaler then unscales inside the
        fused step, too late for gradient clipping (Lightning refuses to clip there)."""
        return adam(params, lr, fused=not str(self.trainer.precision).startswith("16"), **kwargs)

    def gradient_step(self, loss: Tensor, optimizer: Any, max_grad_norm: float | None = None) -> None:
        """zero_grad, backward, optional norm clipping, step (see :mod:`lightning_pg.optimizer_steps`)."""
        self._optimizer_steps.step(self, loss, optimizer, max_grad_norm)

    def apply_gradient(self, gradient: Tensor, optimizer: Any, max_grad_norm: float | None = None) -> None:
        """The same step with a gradient computed elsewhere (the optimizer's parameters flattened in order)."""
        self._optimizer_steps.apply(self, gradient, optimizer, max_grad_norm)

    def on_train_start(self) -> None:
        self._optimizer_steps = OptimizerSteps(self)
        data_state, self._checkpoint_data_state = self._checkpoint_data_state, None
        if data_state and not self.trainer.fit_loop.restarting:
            # Lightning restores the iterable's state (RNGs, envs, replay buffer) only from a checkpoint saved
            # mid-epoch, as ours are; one saved after fit() returned (trainer.save_checkpoint) gets it here
            self.trainer.train_dataloader.load_state_dict(data_state[0])

    def progress_remaining(self) -> float:
        """1 at the start of training, 0 at the budget (the argument of schedules, as in SB3)."""
        return max(0.0, 1.0 - self.num_timesteps / self.hparams.total_timesteps)

    def scheduled(self, spec: ScheduleSpec) -> float:
        return parse_schedule(spec)(self.progress_remaining())

    def set_learning_rate(self, optimizer: Any) -> float:
        lr = self.scheduled(self.hparams.learning_rate)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def metric_names(self, stats: dict[str, Tensor]) -> dict[str, Tensor]:
        """``loss_policy`` -> ``loss/policy``; any other stat -> ``<algo>/<name>`` (e.g. ``ppo/approx_kl``)."""
        algo = type(self).__name__.lower()
        return {(f"loss/{k[5:]}" if k.startswith("loss_") else f"{algo}/{k}"): v.detach() for k, v in stats.items()}

    def configure_callbacks(self) -> list[pl.Callback]:
        """Defaults for Python-API users too: env-step progress bar; env-step checkpoints if none configured;
        worker processes closed when a fit fails (Lightning skips ``teardown`` then)."""
        from lightning_pg.callbacks import EnvStepProgressBar, RLCheckpoint

        callbacks: list[pl.Callback] = [_CloseWorkersOnFailure()]
        if self.trainer.progress_bar_callback is not None:
            callbacks.append(EnvStepProgressBar())
        checkpoints = self.trainer.checkpoint_callbacks
        if checkpoints and not any(isinstance(cb, RLCheckpoint) for cb in checkpoints):
            callbacks.append(RLCheckpoint())
        return callbacks

    # validate/test play evaluation episodes from the loaded weights; during fit evaluation runs every
    # `eval_every` env steps inside training_step instead, so these loaders are empty there.
    def val_dataloader(self) -> list[int]:
        return [] if self.trainer.state.fn == "fit" else [0]

    def test_dataloader(self) -> list[int]:
        return [0]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._log_evaluation()

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._log_evaluation()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lightning_pg"] = {
            "format": CHECKPOINT_FORMAT,
            "algorithm": type(self).__name__,
            "num_timesteps": self.num_timesteps,
            "wandb_run_id": self._wandb_run_id(),
        }
        if self._trainer is not None and self.trainer.world_size > 1:
            # buffers each rank keeps for itself (running observation and reward statistics): every rank's, so a
            # resumed rank gets its own back (state_dict holds rank 0's)
            names = {name for name, _ in self.named_buffers()}
            checkpoint["lightning_pg"]["rank_buffers"] = self.gather_ranks(
                {k: v.detach().cpu() for k, v in self.state_dict().items() if k in names})

    def decorrelate_ranks(self) -> None:
        """seed_everything gives every rank the same torch stream: make each rank's its own (action noise,
        shuffles; each rank's envs have seeds of their own already)."""
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, ()).item()) + 7919 * self.global_rank)

    def _check_ranks_agree(self) -> None:
        """Every rank starts from the same env step (they take every decision on that clock together)."""
        steps = self.trainer.strategy.reduce(torch.tensor([self.num_timesteps, -self.num_timesteps],
                                                          dtype=torch.float64, device=self.device), reduce_op="max")
        if steps[0] != -steps[1]:
            raise ConfigError(
                f"The processes of this run start at different env steps ({int(-steps[1])} to {int(steps[0])}): some "
                "resumed a checkpoint that others could not find (a node without the file system that holds it). "
                "Fix: give every node the same checkpoint (a shared file system, or a copy at the same path) and "
                "pass it as --ckpt_path."
            )

    def gather_ranks(self, value: Any) -> Any:
        """``value`` itself in one process; under DDP every rank's, as ``{"ranks": [...]}``, for a checkpoint
        entry each rank takes its own back from (:meth:`own_rank`). A collective: every rank calls it, as every
        rank saves a checkpoint at the same batch."""
        if self._trainer is None or self.trainer.world_size == 1:
            return value
        import torch.distributed as dist

        ranks: list[Any] | None = [None] * self.trainer.world_size if self.global_rank == 0 else None
        dist.gather_object(value, ranks, dst=0)  # rank 0 writes the checkpoint; the others hold one copy only
        return {"ranks": ranks}

    def own_rank(self, saved: Any) -> tuple[bool, Any]:
        """``(True, this rank's entry)`` of what :meth:`gather_ranks` saved, or ``(False, None)`` when another
        number of processes wrote it (a one-process entry counts as one rank's)."""
        ranks = saved["ranks"] if isinstance(saved, dict) and "ranks" in saved else [saved]
        world = self.trainer.world_size if self._trainer is not None else 1
        return (True, ranks[self.global_rank]) if len(ranks) == world else (False, None)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None, hparams_file: Any = None,
                             strict: bool | None = None, **kwargs: Any) -> Any:
        """Lightning's ``load_from_checkpoint``, safe on files from others: the file is read as plain data
        (``weights_only``), saved hyperparameters that name code must name what this process has imported
        itself (see :mod:`lightning_pg.trust`), and the model is built from their plain values. ``kwargs``
        override saved hyperparameters, as in Lightning."""
        checkpoint = read_checkpoint(checkpoint_path, mmap=False)
        saved = checkpoint.get("hyper_parameters") or {}
        target = check_saved_hyperparameters({k: v for k, v in saved.items() if k not in kwargs}, cls,
                                             checkpoint_path)
        checkpoint["hyper_parameters"] = {k: v for k, v in saved.items() if k not in ("_instantiator", "_class_path")}
        buffer = io.BytesIO()  # Lightning then loads these plain values (it takes a path or a file)
        torch.save(checkpoint, buffer)
        buffer.seek(0)
        return super(RLModule, target).load_from_checkpoint(buffer, map_location, hparams_file, strict, **kwargs)

    def check_checkpoint(self, checkpoint: dict[str, Any], path: Any = "This checkpoint") -> dict[str, Any]:
        """Raise a one-paragraph :class:`ConfigError` unless ``checkpoint`` is lightning_pg's, of this layout,
        algorithm and network sizes; returns its ``lightning_pg`` section. (The CLI calls it before anything is
        written; Lightning's restore calls it through ``on_load_checkpoint``.)"""
        state = checkpoint.get("lightning_pg")
        if not isinstance(state, dict):
            raise ConfigError(
                f"{path} was not written by lightning_pg (it has no 'lightning_pg' section: a bare torch.save file "
                "or another library's checkpoint). Fix: pass a last.ckpt or best.ckpt from a lightning_pg run's "
                "checkpoints/ folder."
            )
        if state.get("format", 1) != CHECKPOINT_FORMAT:
            raise ConfigError(
                f"{path} was written by a lightning_pg whose networks and data are laid out differently "
                f"(checkpoint format {state.get('format', 1)}, this version reads {CHECKPOINT_FORMAT}). Fix: load it "
                "with the lightning_pg version that wrote it (0.1.x writes format 1), or train anew with this one."
            )
        if state.get("algorithm") != type(self).__name__:
            raise ConfigError(
                f"{path} holds a {state.get('algorithm')} model, but the config builds {type(self).__name__}. "
                f"Fix: use the config of the run that wrote it (model class_path lightning_pg.{state.get('algorithm')}), "
                "or a checkpoint of this algorithm."
            )
        saved = checkpoint.get("state_dict") or {}
        ours = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        theirs = {k: tuple(getattr(v, "shape", ())) for k, v in saved.items()}
        differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        if differ:
            first = differ[0]
            saved_network = (checkpoint.get("hyper_parameters") or {}).get("network") or DEFAULT_NETWORK
            raise ConfigError(
                f"{path} holds networks of other sizes than the config builds ({len(differ)} tensors differ; "
                f"{first} is {list(theirs[first]) if first in theirs else 'absent'} in the checkpoint and "
                f"{list(ours[first]) if first in ours else 'absent'} here; the checkpoint's network is "
                f"{saved_network}, the config's {self.network}). Fix: use the config of the run that wrote it "
                "(its network and env settings; the run folder keeps it as config.yaml), or train anew."
            )
        return state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = self.check_checkpoint(checkpoint)
        self.num_timesteps = int(state["num_timesteps"])
        if "rank_buffers" in state:
            found, buffers = self.own_rank(state["rank_buffers"])
            if found:
                checkpoint["state_dict"].update(buffers)  # (loaded into the module after this hook)
        self._checkpoint_data_state = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get(
            "combined_loader")

    # ---- evaluation and logging -------------------------------------------------------------------------
    def run_evaluation(self) -> tuple[float, float]:
        from lightning_pg.evaluation import episode_returns, evaluate

        if self.trainer.world_size == 1:
            mean, std = evaluate(self, self.hparams.eval_episodes, seed=EVAL_SEED)
        else:  # each rank plays its share of the same episodes; their sums give every rank the same figures
            returns = torch.tensor(episode_returns(self, self.hparams.eval_episodes, EVAL_SEED,
                                                   shard=(self.global_rank, self.trainer.world_size)),
                                   dtype=torch.float64)
            sums = self.trainer.strategy.reduce(torch.stack([returns.sum(), returns.square().sum(),
                                                             torch.tensor(float(len(returns)), dtype=torch.float64)]
                                                            ).to(self.device), reduce_op="sum").cpu()
            mean = float(sums[0] / sums[2])
            std = float((sums[1] / sums[2] - mean**2).clamp_min(0.0).sqrt())
        self.last_eval, self.evaluated_at = (mean, std), self.num_timesteps
        # in callback_metrics for the best-model checkpoint and the progress bar; loggers get it below
        self.log("eval/return_mean", mean, prog_bar=True, logger=False, batch_size=1)
        self._to_loggers({"eval/return_mean": mean, "eval/return_std": std})
        return mean, std

    def _log_evaluation(self) -> None:
        from lightning_pg.evaluation import evaluate

        mean, std = evaluate(self, self.hparams.eval_episodes, seed=EVAL_SEED)
        self.log_dict({"eval/return_mean": mean, "eval/return_std": std}, batch_size=1)

    def record_video(self) -> None:
        """One deterministic episode from evaluation's first start state to ``<default_root_dir>/videos/
        step_<N>.mp4``, logged to W&B as ``eval/video``. Rank 0 only: every rank holds the same weights."""
        if not self.trainer.is_global_zero:
            return
        from lightning_pg.video import record_episode

        path = os.path.join(self.trainer.default_root_dir, "videos", f"step_{self.num_timesteps}.mp4")
        record_episode(self, path, seed=EVAL_SEED)
        for logger in self.loggers:
            if type(logger).__name__ == "WandbLogger":
                import wandb

                logger.experiment.log({"eval/video": wandb.Video(path, format="mp4"),
                                       "time/env_steps": self.num_timesteps})

    def _record_episodes(self, returns: Any, lengths: Any) -> None:
        if len(returns):
            self._episode_returns.extend(np.asarray(returns, dtype=np.float64).tolist())
            self._episode_lengths.extend(np.asarray(lengths, dtype=np.int64).tolist())
            self.last_episode_return = float(returns[-1])

    def _write_metrics(self, metrics: dict[str, Tensor]) -> None:
        """Training metrics straight to the loggers, x axis = env steps, only every ``log_every`` env steps.

        Not ``self.log``: its per-call cost on every step (GUIDE §3) is that of a small update, and it would re-send
        stale values.
        """
        steps, clock = self._log_clock
        now = time.perf_counter()
        out = {k: float(v) for k, v in metrics.items()}
        out["time/sps"] = (self.num_timesteps - steps) / max(now - clock, 1e-9)
        out.update(self._episode_metrics())
        self._log_clock = (self.num_timesteps, now)
        self._to_loggers(out)

    def _episode_metrics(self) -> dict[str, float]:
        """Mean return and length, and the count, of the episodes that ended since the last write on every rank."""
        returns, lengths, count = (metric.to(self.device) for metric in self._episode_sums)  # (NCCL syncs on GPUs)
        returns.update(torch.tensor(self._episode_returns, dtype=torch.float64))
        lengths.update(torch.tensor(self._episode_lengths, dtype=torch.float64))
        count.update(torch.tensor(float(len(self._episode_returns)), dtype=torch.float64))
        n = float(count.compute())  # (all-gathers under DDP)
        out = {"train/episode_return": float(returns.compute()) / n,
               "train/episode_length": float(lengths.compute()) / n, "train/episodes": n} if n else {}
        for metric in self._episode_sums:
            metric.reset()
        self._episode_returns.clear()
        self._episode_lengths.clear()
        return out

    def _to_loggers(self, metrics: dict[str, float]) -> None:
        metrics = {**metrics, "time/env_steps": self.num_timesteps}
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.num_timesteps)
            logger.save()  # we log rarely (every log_every env steps), so flush each time

    def check_budget_left(self, done: int) -> None:
        """Refuse to resume a run whose checkpoint has reached the budget (it would only rewrite last.ckpt)."""
        total = self.hparams.total_timesteps
        if done >= total:
            raise ConfigError(
                f"The checkpoint has already taken {done} env steps and total_timesteps is {total}: nothing is left "
                f"to train, and resuming would only rewrite its last.ckpt. Fix: raise --model.total_timesteps above "
                f"{done} to train on, or evaluate it with `python -m lightning_pg validate`."
            )

    #: whether some gradient steps leave parameters out of their loss (several optimizers, a critic fitted
    #: apart): DDP then needs to expect it
    partial_backward = False

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.partial_backward:
            let_backward_leave_parameters_out(self.trainer)
        if stage == "fit" and self.trainer.world_size > 1:
            self._seed_like_rank_zero()

    def _seed_like_rank_zero(self) -> None:
        """Every rank takes rank 0's seed (the one config.yaml keeps): processes started by torchrun or srun
        without ``--seed_everything`` each drew a seed of their own, so the other ranks' envs were seeded by
        numbers nobody recorded, and the run could not be repeated. Reseeding here, once the processes can
        talk, gives every rank the same stream whoever launched it (each rank's envs then offset by rank)."""
        seed = self.trainer.strategy.broadcast(os.environ.get("PL_GLOBAL_SEED"), src=0)
        if seed is not None:  # (None: rank 0 was started unseeded, as the user asked)
            from lightning_fabric.utilities.seed import seed_everything

            seed_everything(int(seed), workers=os.environ.get("PL_SEED_WORKERS") == "1", verbose=False)

    def on_fit_start(self) -> None:
        if self.num_timesteps:  # restored (or fitted before)
            self.check_budget_left(self.num_timesteps)
        self._log_clock = (self.num_timesteps, time.perf_counter())
        self._fit_clock = (self.num_timesteps, time.perf_counter())
        if self.hparams.video_every:  # an env that cannot draw: said now (every rank, so all stop alike)
            from lightning_pg.video import check_renders

            check_renders(self)
        if self.trainer.world_size > 1:
            self._check_ranks_agree()
        if self.trainer.world_size > 1 and not self.num_timesteps:  # (a resumed run takes every rank's own
            self.decorrelate_ranks()                                 # streams back from the checkpoint instead)
        for logger in self.loggers:  # W&B: plot every metric against env steps
            if type(logger).__name__ == "WandbLogger" and self.trainer.is_global_zero:
                logger.experiment.define_metric("*", step_metric="time/env_steps")

    def on_fit_end(self) -> None:
        steps, start = self._fit_clock
        seconds = time.perf_counter() - start
        rank_zero_info(
            f"{type(self).__name__}: {self.num_timesteps} env steps ({self.num_timesteps - steps} in this fit) in "
            f"{seconds:.2f} s of fit, {(self.num_timesteps - steps) / max(seconds, 1e-9):.0f} env steps/s"
            + (f"; last eval return {self.last_eval[0]:.1f} ± {self.last_eval[1]:.1f}" if self.last_eval else "")
        )

    def _wandb_run_id(self) -> str | None:
        for logger in self.loggers if self._trainer is not None else ():
            if type(logger).__name__ == "WandbLogger":
                return str(logger.version)
        return None

    def mean_over_ranks(self, value: Tensor) -> Tensor:
        """The mean over the DDP ranks (each holding a batch of the same size), so every rank decides alike;
        ``value`` itself in one process."""
        if self._trainer is None or self.trainer.world_size == 1:
            return value
        return self.trainer.strategy.reduce(value, reduce_op="mean")

    def _sum_over_ranks(self, steps: int) -> int:
        if self.trainer.world_size == 1:
            return steps
        total = self.trainer.strategy.reduce(torch.tensor(steps, device=self.device), reduce_op="sum")
        return int(total.item())


class _CloseWorkersOnFailure(pl.Callback):
    """A fit that raises ends without ``teardown``: close the train iterable's worker processes (async envs,
    A3C's workers) here, so none outlives it in a notebook or a sweep."""

    def on_exception(self, trainer: pl.Trainer, pl_module: Any, exception: BaseException) -> None:
        data = getattr(pl_module, "_train_data", None)
        if data is not None and data.holds_processes:
            data.close()
