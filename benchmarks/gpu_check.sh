#!/usr/bin/env bash
# GPU check: CUDA, 16-mixed / bf16-mixed, the on-policy update against its float64 reference on the GPU, resume
# and throughput, next to the same runs on that machine's CPU.
#
#   bash benchmarks/gpu_check.sh [OUTDIR]         (ONLY=REGEX runs only the runs whose names match)
#
# Every run goes through the CLI (`python -m lightning_pg fit`) with the logger off (the W&B default logger needs
# wandb, which GPU images may lack). Each run prints its "N env steps ... R env steps/s" line; a failing run
# prints FAIL and the check goes on, so one call gives the whole picture.
set -u
OUT=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
status=0

fit() {  # fit NAME CONFIG ARGS...: one CLI run, its summary line and exit status
  local name=$1 config=$2; shift 2
  [[ $name =~ ${ONLY:-.} ]] || return 0
  local start=$(date +%s%N)
  if timeout 150 python3 -m lightning_pg fit --config "configs/$config" --trainer.logger=false \
      --trainer.enable_progress_bar=false --trainer.default_root_dir "$OUT/runs/$name" --seed_everything 0 "$@" \
      >"$OUT/$name.log" 2>&1; then
    echo "$name: $(grep -h 'env steps/s' "$OUT/$name.log" | tail -1) [process $(( ($(date +%s%N) - start) / 1000000 )) ms]"
  else
    status=1; echo "$name: FAIL"; tail -15 "$OUT/$name.log"
  fi
}

nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# The on-policy update on the GPU is the plain-autograd reference's (every loss term on, both optimizer-step paths)
python3 - <<'EOF' || status=1
import pytorch_lightning as pl

from lightning_pg import A2C, PPO
from lightning_pg.optimizer_steps import OptimizerSteps
from tests.reference import a2c_objective, assert_gradients_match, ppo_objective, record_step, reference_gradient

cases = {"ppo": (PPO, dict(env_id="CartPole-v1", num_envs=8, n_steps=32, batch_size=256, n_epochs=8, clip_range=0.1,
                           clip_range_vf=0.01), 6, ppo_objective),
         "a2c": (A2C, dict(env_id="Pendulum-v1", num_envs=8, n_steps=16, normalize_advantage=True), 2, a2c_objective)}
for name, (cls, kwargs, step, objective) in cases.items():
    for direct in (True, False):
        OptimizerSteps.direct_enabled = direct
        pl.seed_everything(0)
        model = cls(ent_coef=0.01, learning_rate=3e-3, total_timesteps=10**6, eval_every=-1, **kwargs)
        record = record_step(model, step, accelerator="gpu")
        expected, _ = reference_gradient(model, record, objective)
        assert_gradients_match(record, expected)
        print(f"{name} on {record['grads']['pi_head.bias'].device}, direct steps {record['direct']}: "
              "the update's gradient is the float64 reference's")
EOF

# PPO (CartPole, 256-sample minibatches of a 64-wide MLP): CPU and GPU at each precision
fit ppo_cpu ppo_cartpole.yaml --model.total_timesteps=30000 --trainer.accelerator=cpu
for p in 32-true 16-mixed bf16-mixed; do
  fit ppo_gpu_$p ppo_cartpole.yaml --model.total_timesteps=30000 --trainer.accelerator=gpu --trainer.precision=$p
done
# PPO on 64x64 pixels (Nature CNN): where a GPU pays
pix=(--model.env_id=tests.envs:PixelCartPole --model.total_timesteps=4096 --model.n_steps=128 --model.batch_size=256
     --model.n_epochs=4 --model.eval_every=-1)
fit ppo_pixels_cpu ppo_cartpole.yaml "${pix[@]}" --trainer.accelerator=cpu --torch_threads=$(nproc)
fit ppo_pixels_gpu_bf16 ppo_cartpole.yaml "${pix[@]}" --trainer.accelerator=gpu --trainer.precision=bf16-mixed
# SAC (Pendulum, 256x256 twin critics, one update per env step): CPU and GPU at each precision
sac=(--model.total_timesteps=3000 --model.eval_every=-1)
fit sac_cpu sac_pendulum.yaml "${sac[@]}" --trainer.accelerator=cpu
for p in 32-true 16-mixed bf16-mixed; do
  fit sac_gpu_$p sac_pendulum.yaml "${sac[@]}" --trainer.accelerator=gpu --trainer.precision=$p
done
fit td3_gpu_32 td3_pendulum.yaml --model.total_timesteps=3000 --model.learning_starts=500 --model.eval_every=-1 \
    --trainer.accelerator=gpu

fit a2c_gpu_32 a2c_cartpole.yaml --model.total_timesteps=10000 --trainer.accelerator=gpu
fit reinforce_gpu_bf16 reinforce_cartpole.yaml --model.total_timesteps=10000 --trainer.accelerator=gpu \
    --trainer.precision=bf16-mixed

# Resume on the GPU (CUDA RNG state, replay buffer): Ctrl+C-free version, budget 2000 then 3000 from last.ckpt
fit sac_gpu_resume_a sac_pendulum.yaml --model.total_timesteps=2000 --model.eval_every=-1 --trainer.accelerator=gpu
[ -d "$OUT/runs/sac_gpu_resume_a" ] && cp -r "$OUT/runs/sac_gpu_resume_a" "$OUT/runs/sac_gpu_resume_b"
fit sac_gpu_resume_b sac_pendulum.yaml --model.total_timesteps=3000 --model.eval_every=-1 --trainer.accelerator=gpu \
    --ckpt_path=last

# A GPU-trained checkpoint evaluates on a CPU-only process
python3 - "$OUT" <<'EOF' || status=1
import sys
from pathlib import Path

import torch

import lightning_pg as lp

for ckpt in sorted(Path(sys.argv[1], "runs").glob("*gpu*/run_*/checkpoints/last.ckpt")):
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["lightning_pg"]
    model = getattr(lp, saved["algorithm"]).load_from_checkpoint(ckpt, map_location="cpu")
    mean, std = lp.evaluate(model, 5, seed=0)
    print(f"{ckpt.parts[-4]}: {saved['num_timesteps']} env steps, evaluated on the CPU: {mean:.1f} +- {std:.1f}")
EOF
exit $status
