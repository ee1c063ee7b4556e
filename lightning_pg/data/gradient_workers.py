"""A3C's train iterable: worker processes that play and differentiate, and a learner that applies what they send.

Each of ``workers`` processes owns ``num_envs`` envs and a copy of the module. It copies the learner's latest
weights (shared memory, under a lock), plays one n-step rollout, computes the gradient of the module's own
``loss`` on it, and sends that gradient, the weights' version and the rollout's episode statistics through a
pipe of its own (a worker blocks once its pipe is full, so it runs at most a message or two ahead). The
learner (the training process) takes the messages as they come, in turn over the workers that have one: each
is one batch, applied by the module's optimizer, after which the new weights are published.
While the learner applies one worker's gradient the others go on playing: that is the asynchrony, and its
price is the policy lag, the updates applied between the weights a worker played with and its gradient's turn.

Workers ignore Ctrl+C and SIGTERM (the training process decides how the run stops and saves); they are stopped
at teardown and at exit. A worker's exception, or a worker that dies, stops the run with a paragraph that
names the worker.
"""
from __future__ import annotations

import multiprocessing
import signal
import time
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import IterableDataset

from lightning_pg.data.base import rng_state, set_rng_state
from lightning_pg.envs.workers import close_at_exit, stop_closing_at_exit
from lightning_pg.errors import EnvError, LightningPGError
from lightning_pg.optim import assign, flat_grad

if TYPE_CHECKING:
    from lightning_pg.algorithms.a3c import A3C


class WorkerDied(LightningPGError):
    """A gradient worker ended without saying why (killed, or out of memory)."""


class GradientWorkers(IterableDataset):
    """Batches ``{"gradients" [P], "version", "worker", "losses", "env_steps", "episode_returns",
    "episode_lengths"}`` from ``workers`` processes (started at the first batch)."""

    holds_processes = True  # closed at teardown (see RLModule.teardown)

    def __init__(self, module: "A3C", workers: int):
        self.module, self.workers = module, workers
        self.processes: list[Any] = []
        self.pipes: list[Any] = []
        self._next = 0  # the worker whose message is taken first when several have one (turns, not starvation)
        self._said_resume = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while not self.module.budget_reached:
            yield self.collect()

    def _start(self) -> None:
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        params = list(self.module.parameters())
        self.shared = torch.cat([p.detach().reshape(-1).float() for p in params]).share_memory_()
        self.version, self.lock, self.stop = context.Value("q", 0, lock=False), context.Lock(), context.Event()
        base = int(torch.randint(0, 2**31 - 1 - 1000 * self.workers, ()).item())  # from the run's seeded RNG
        for i in range(self.workers):
            parent, child = context.Pipe(duplex=False)
            _room_for(parent, 4 * (4 * len(self.shared) + 4096))
            process = context.Process(target=_work, args=(self.module, i, base + 1000 * i, child, parent, self.shared,
                                                          self.version, self.lock, self.stop),
                                      name=f"A3C worker {i}", daemon=True)
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)
        close_at_exit(self)

    def publish(self, params: list[torch.Tensor]) -> int:
        """The module's current weights (``params``, all of them in order, e.g. the optimizer's one flat tensor)
        for the workers; returns their version (updates applied so far)."""
        weights = params[0].detach().reshape(-1) if len(params) == 1 else torch.cat([p.detach().reshape(-1)
                                                                                      for p in params])
        while not self.lock.acquire(timeout=0.25):  # a worker killed while copying would hold it forever
            self._check_alive()
        try:
            assign([self.shared], weights)
            self.version.value += 1
            return self.version.value
        finally:
            self.lock.release()

    @property
    def current_version(self) -> int:
        return self.version.value

    def collect(self) -> dict[str, Any]:
        if not self.processes:
            self._start()
        while not (ready := wait(self.pipes, timeout=0.25)):
            self._check_alive()
        order = self.pipes[self._next:] + self.pipes[:self._next]
        pipe = next(p for p in order if p in ready)
        index = self.pipes.index(pipe)
        self._next = (index + 1) % len(self.pipes)
        try:
            message = pipe.recv()
        except (EOFError, OSError):  # its end closed: the worker is gone
            self.processes[index].join(timeout=1.0)
            self._check_alive()
            raise
        kind, index, *rest = message
        if kind == "error":
            type_name, text = rest
            error = EnvError if type_name == "EnvError" else WorkerDied
            raise error(f"A3C worker {index} stopped the run: {text}" if type_name == "EnvError" else
                        f"A3C worker {index} raised {type_name}: {text}. Fix: run the same settings as A2C "
                        "(--model.class_path lightning_pg.A2C) with --debug to see where it is raised.")
        version, gradients, env_steps, returns, lengths, losses = rest
        return {"gradients": torch.from_numpy(gradients), "version": version, "worker": index,
                "losses": {k: torch.tensor(v) for k, v in losses.items()}, "env_steps": env_steps,
                "episode_returns": returns, "episode_lengths": lengths}

    def _check_alive(self) -> None:
        for index, process in enumerate(self.processes):
            if process.exitcode is not None:
                raise WorkerDied(
                    f"A3C worker {index} (pid {process.pid}) died with exit code {process.exitcode} without an "
                    "error of its own (killed, or out of memory). The run stops; its last checkpoint stands. Fix: "
                    "resume with --ckpt_path last; if workers keep dying, give the run more memory or fewer "
                    "--model.workers."
                )

    def state_dict(self) -> dict[str, Any]:
        """The learner's RNG (the workers' seeds are drawn from it); the workers' envs and rollouts in flight are
        not saved: a resumed run starts fresh workers from the saved weights."""
        return {"rng": rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_rng_state(state["rng"])
        if not self._said_resume:
            self._said_resume = True
            rank_zero_warn("A3C resumes its weights, optimizer and counters; its workers start again with fresh "
                           "envs (the episodes open at the checkpoint and the gradients in flight are dropped).")

    def close(self) -> None:
        if not self.processes:
            return
        self.stop.set()
        for pipe in self.pipes:  # a worker blocked on a full pipe gets a broken pipe and ends
            pipe.close()
        deadline = time.monotonic() + 5
        for process in self.processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        self.processes, self.pipes = [], []
        stop_closing_at_exit(self)


def _room_for(pipe: Any, size: int) -> None:
    """Let the pipe hold ``size`` bytes (Linux; elsewhere its default): a worker then blocks only after a few
    messages the learner has not taken, instead of at the first (which leaves both sides waiting in turn)."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (ImportError, OSError):
        pass


def _work(module: "A3C", index: int, seed: int, pipe: Any, parent_pipe: Any, shared: torch.Tensor, version: Any,
          lock: Any, stop: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the training process decides how the run stops
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent_pipe.close()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    data = None
    try:
        params = list(module.parameters())
        data = module.make_rollouts()
        while not stop.is_set():
            with lock:
                assign(params, shared)
                seen = version.value
            batch = data.collect()
            losses = module.loss(batch)
            total = sum(v for k, v in losses.items() if k.startswith("loss_"))
            flat = flat_grad(total, params)
            pipe.send(("batch", index, seen, flat.float().numpy(), int(batch["env_steps"]),
                       np.asarray(batch["episode_returns"]), np.asarray(batch["episode_lengths"]),
                       {k: float(v.detach()) for k, v in losses.items()}))
    except (BrokenPipeError, EOFError):  # the training process closed its end: the run is over
        pass
    except Exception as exc:  # noqa: BLE001 - said by the training process, naming this worker
        try:
            pipe.send(("error", index, type(exc).__name__, str(exc)))
        except OSError:
            pass
    finally:
        if data is not None:
            data.close()
