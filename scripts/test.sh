#!/usr/bin/env bash
# Create or reuse .venv, install .[dev], run the test suite. Arguments go to pytest:
#   scripts/test.sh -k resume        scripts/test.sh -m "not slow"
set -euo pipefail
F5APP_EXTRAS=dev source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"
source "$ROOT/scripts/ensure_test_tools.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec python -m pytest "$@"
