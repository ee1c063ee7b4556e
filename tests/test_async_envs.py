"""``vectorization: async``: worker processes step the envs in parallel. The same transitions as sync envs, the
same one-paragraph error for an env that raises, Ctrl+C and SIGTERM leave no worker behind, and a resumed run
goes on (its envs reseeded from the saved RNG)."""
import signal
import subprocess
import time

import numpy as np
import pytest
import pytorch_lightning as pl

import lightning_pg as lp
from lightning_pg.envs import make_vec_env
from tests.helpers import (REPO, alive, ckpt_state, cli_args, cli_env, interrupt_like_a_terminal, run_cli, run_folder,
                           wait_for_children)

SHORT_EPISODES = '[{class_path: gymnasium.wrappers.TimeLimit, init_args: {max_episode_steps: 7}}]'


def test_async_envs_step_exactly_as_sync_envs():
    """The reference-step test of the fast path: the same seeds and actions give the same observations, rewards,
    ends and true last observations, through terminations (CartPole falls) and time-limit cuts."""
    wrappers = [{"class_path": "gymnasium.wrappers.TimeLimit", "init_args": {"max_episode_steps": 30}}]
    sync = make_vec_env("CartPole-v1", None, 5, seed=3, env_wrappers=wrappers)
    workers = make_vec_env("CartPole-v1", None, 5, seed=3, env_wrappers=wrappers, vectorization="async")
    try:
        np.testing.assert_array_equal(sync.reset(seed=3)[0], workers.reset(seed=3)[0])
        rng, ended = np.random.default_rng(0), 0
        for _ in range(200):
            actions = rng.integers(0, 2, 5)
            a, b = sync.step(actions), workers.step(actions)
            for x, y in zip(a[:4], b[:4]):
                np.testing.assert_array_equal(x, y)
            np.testing.assert_array_equal(a[4].get("_final_obs", np.zeros(5, bool)), b[4].get("_final_obs", np.zeros(5, bool)))
            for i in np.flatnonzero(a[4].get("_final_obs", [])):
                np.testing.assert_array_equal(a[4]["final_obs"][i], b[4]["final_obs"][i])
                ended += 1
        assert ended > 20  # episodes ended both ways, many times
    finally:
        sync.close()
        workers.close()


@pytest.mark.parametrize("env_id, env_kwargs, said", [
    ("tests.envs:BusyStep", {"ms": 0.0, "raise_at": 40}, "raised ValueError in step(): broken at step 40"),
    ("tests.envs:RaisesSimError", {"ms": 0.0}, "raised SimError in step(): 7: solver diverged"),  # (two-argument init)
])
def test_a_worker_env_that_raises_gets_the_in_process_message_and_its_workers_end(env_id, env_kwargs, said):
    messages = []
    for vectorization in ("sync", "async"):
        model = lp.PPO(env_id=env_id, env_kwargs=env_kwargs, num_envs=4, n_steps=32, batch_size=64,
                       total_timesteps=4096, eval_every=-1, vectorization=vectorization)
        with pytest.raises(lp.EnvError) as error:
            pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                       enable_model_summary=False, max_epochs=-1).fit(model)
        messages.append(str(error.value))
        assert model._train_data.envs is None  # closed at the error: no worker waits for the process to end
    assert messages[0] == messages[1]
    assert said in messages[1]


def test_a_second_fit_goes_on_after_the_first():
    for cls, extra in ((lp.SAC, dict(learning_starts=10, batch_size=8)), (lp.PPO, dict(n_steps=16, batch_size=16))):
        for vectorization in ("sync", "async"):
            model = cls(env_id="Pendulum-v1", total_timesteps=32, eval_every=-1, vectorization=vectorization, **extra)
            trainer = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                           enable_model_summary=False, max_epochs=-1)
            pl.Trainer(**trainer).fit(model)
            model.hparams.total_timesteps = 64
            pl.Trainer(**trainer).fit(model)
            assert model.num_timesteps >= 64


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_save_and_leave_no_worker_then_the_run_resumes(tmp_path, signum):
    args = ("--model.vectorization=async", "--model.num_envs=4", f"--model.env_wrappers={SHORT_EPISODES}",
            "--checkpoint.every_n_env_steps=100000000")
    proc = subprocess.Popen(cli_args("--model.total_timesteps=100000000", *args, root=tmp_path), cwd=REPO,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = wait_for_children(proc, 2)  # the training envs' 2 workers
    stderr = interrupt_like_a_terminal(proc, signum)
    assert proc.returncode == 128 + signum and "Traceback" not in stderr, stderr[-3000:]
    time.sleep(0.5)
    assert workers and not [w for w in workers if alive(w)]  # no orphan
    stopped_at = ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")["lightning_pg"]["num_timesteps"]
    assert stopped_at > 0

    resumed = run_cli(f"--model.total_timesteps={stopped_at + 2000}", "--ckpt_path=last", *args, root=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Async envs live in their worker processes" in resumed.stderr
    final = ckpt_state(run_folder(tmp_path) / "checkpoints" / "last.ckpt")["lightning_pg"]["num_timesteps"]
    assert stopped_at + 2000 <= final < stopped_at + 4000


def test_invalid_vectorization_is_a_config_error():
    with pytest.raises(lp.ConfigError, match="vectorization"):
        lp.PPO(env_id="CartPole-v1", vectorization="threads")
