#!/usr/bin/env bash
# Create or reuse .venv, train the tiny demo model on the bundled data (CPU, a few minutes),
# then speak one sentence with it. Extra arguments go to the training command, e.g.
#   scripts/demo.sh trainer.max_updates=600
set -euo pipefail
export F5APP_EXTRAS="${F5APP_EXTRAS:-eval}"  # the demo scores itself with the bundled ASR and speaker models
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"
cd "$ROOT"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" WANDB_MODE="${WANDB_MODE:-disabled}" PYTHONUNBUFFERED=1

python -m f5app.train experiment=demo "$@"
echo "[f5app] demo checkpoints:"
python -m f5app.ckpt list outputs/runs/demo

wav="outputs/runs/demo/samples/demo_sentence.wav"
python -m f5app.infer run_name=demo ckpt=best \
  text="The birch canoe slid on the smooth planks." out="$wav" overwrite=true
echo "[f5app] the demo model speaks: $wav"
