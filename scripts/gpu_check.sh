#!/usr/bin/env bash
# The GPU check: one prepared run on a lent GPU (about 8 minutes on one GPU); here on the CPU with
# `--device cpu --model tiny` (tests/test_gpu_check.py runs it that way so it cannot rot).
#
#   scripts/gpu_check.sh [--device cuda|cpu] [--model f5tts_v1_base|f5tts_v1_small|tiny] [--out DIR]
#
# Writes DIR/gpu_check.json (every figure) and DIR/gpu_check.md (the table), and prints the table:
#   1. inference: RTF at NFE 32/16/7 in fp16 and bf16 (and fp32), torch.compile on and off, against
#      upstream infer_process; a long text's chunks batched vs one at a time; time to first audio
#      of the streaming path vs the full response and vs upstream's streaming (scripts/bench_speed.py);
#   2. exact resume on the device: a tiny run trained to update 6 in one go, against the same run
#      stopped at update 3 and resumed to 6 (ckpt=auto); the final weights compared bit for bit;
#   3. training updates/s and MFU against upstream's Trainer at --model size, bf16, same batches:
#      scripts/bench.py --only training (scripts/bench_train.py), f5app and upstream side by side.
set -euo pipefail

DEVICE=cuda
MODEL=f5tts_v1_base
OUT=outputs/gpu_check
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (use --device, --model, --out)" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -rf "$OUT/runs"

# 1. inference (the CPU smoke run keeps to NFE 7 and bf16: a full sweep is minutes there)
if [[ $DEVICE == cpu ]]; then
  INFER_ARGS=(--nfe 7 --options fp32,bf16)
else
  INFER_ARGS=(--nfe 32,16,7 --options fp32,fp16,bf16)
fi
"$PY" "$ROOT/scripts/bench_speed.py" --model "$MODEL" --device "$DEVICE" "${INFER_ARGS[@]}" --compile --ttfa --long \
  --workdir "$OUT/work" --json "$OUT/inference.json" > "$OUT/inference.log" 2>&1 || { tail -30 "$OUT/inference.log"; exit 1; }

# 2. exact resume: one run straight to update 6; another stopped at 3, then resumed to 6
CPU_FLAG=$([[ $DEVICE == cpu ]] && echo true || echo false)
PRECISION=$([[ $DEVICE == cpu ]] && echo no || echo bf16)
train() {  # run_name max_updates
  "$PY" -m f5app.train experiment=demo run_name="$1" output_root="$OUT/runs" trainer.max_updates="$2" trainer.save_every=3 \
    trainer.val_every=0 trainer.sample_every=0 eval.every=0 logger=none trainer.cpu="$CPU_FLAG" \
    trainer.mixed_precision="$PRECISION" >> "$OUT/resume.log" 2>&1
}
train straight 6 && train resumed 3 && train resumed 6 || { tail -30 "$OUT/resume.log"; exit 1; }
"$PY" - "$OUT" "$DEVICE" <<'EOF' > "$OUT/resume.json"
import json, sys
from pathlib import Path
import torch
out = Path(sys.argv[1])
def weights(run):
    payload = torch.load(out / "runs" / "runs" / run / "checkpoints" / "update_00000006" / "model.pt", map_location="cpu", weights_only=True)
    return {**{f"model.{k}": v for k, v in payload["model_state_dict"].items()},
            **{f"ema.{k}": v for k, v in payload["ema_model_state_dict"].items() if torch.is_tensor(v)}}
a, b = weights("straight"), weights("resumed")
differ = [k for k in a if not torch.equal(a[k], b[k])]
print(json.dumps({"device": sys.argv[2], "tensors": len(a), "differ": differ, "bit_identical": not differ and a.keys() == b.keys()}))
EOF

# 3. training against upstream's Trainer at --model size, same batches (bf16 on a GPU); tiny runs the same
#    comparison as a smoke test
TRAIN_ARGS=(--only training --model "$MODEL" --device "$DEVICE" --precision "$PRECISION" --train-variants f5app,upstream)
if [[ $DEVICE == cpu ]]; then
  TRAIN_ARGS+=(--train-updates 1)
fi
"$PY" "$ROOT/scripts/bench.py" "${TRAIN_ARGS[@]}" --json "$OUT/training.json" \
  > "$OUT/training.log" 2>&1 || { tail -30 "$OUT/training.log"; exit 1; }

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
inference = json.loads((out / "inference.json").read_text())
resume = json.loads((out / "resume.json").read_text())
training = json.loads((out / "training.json").read_text())
lines = [inference["table"].split("\n\nmatmul")[0], "",
         "| check | result |", "|---|---|",
         f"| exact resume on {resume['device']}: straight to 6 vs stopped at 3 and resumed | "
         f"{'bit-identical' if resume['bit_identical'] else 'DIFFERS: ' + ', '.join(resume['differ'][:5])} ({resume['tensors']} tensors) |"]
lines.append("| training (scripts/bench.py --only training) | see below |")
lines.append(training["table"])
lines.append("\nmatmul" + inference["table"].split("\n\nmatmul")[1])
table = "\n".join(lines)
(out / "gpu_check.md").write_text(table + "\n")
(out / "gpu_check.json").write_text(json.dumps({"inference": inference, "resume": resume, "training": training}, indent=2) + "\n")
print(table)
EOF
