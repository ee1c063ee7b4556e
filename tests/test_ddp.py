"""Lightning's DDP on CPU (two processes, gloo): env steps are summed over ranks and ranks play their own envs."""
from tests.helpers import ckpt_state, run_cli


def test_ppo_under_ddp_counts_env_steps_over_both_ranks(tmp_path):
    result = run_cli("--trainer.strategy=ddp", "--trainer.devices=2", "--model.total_timesteps=8192",
                     "--model.eval_every=-1", config="configs/ppo_cartpole.yaml", root=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    state = ckpt_state(tmp_path / "checkpoints" / "last.ckpt")
    # each rank steps 8 envs x 32 steps per rollout, 512 env steps per rollout in all: 16 rollouts of 20
    # full-batch epochs reach 8192. Counting one rank only would take 32 rollouts (640 optimizer steps).
    assert state["lightning_pg"]["num_timesteps"] == 8192
    assert state["global_step"] == 16 * 20
