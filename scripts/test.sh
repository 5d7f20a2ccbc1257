#!/usr/bin/env bash
# Create or reuse .venv, install .[dev], run the test suite. Arguments go to pytest:
#   scripts/test.sh -k resume        scripts/test.sh -m "not slow"        F5APP_TEST_WORKERS=1 scripts/test.sh -x
set -euo pipefail
F5APP_EXTRAS=dev source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"
source "$ROOT/scripts/ensure_test_tools.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
# Test files run in parallel worker processes (pytest-xdist), one per core up to 4; each file's
# tests stay in one worker, so its module fixtures (trained runs, servers) are built once.
# F5APP_TEST_WORKERS=1 runs everything in this process (e.g. under a debugger).
# Each worker (and what it starts) gets its share of the cores as torch threads: OpenMP threads
# beyond the cores spin against each other, which made one test file 3x slower when two workers
# each ran torch with every core.
cores="$(python -c 'import os; print(len(os.sched_getaffinity(0)))')"
workers="${F5APP_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}"
parallel=()
if [ "$workers" -gt 1 ]; then
  parallel=(-n "$workers" --dist loadfile)
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( cores / workers > 0 ? cores / workers : 1 ))}"
fi
exec python -m pytest "${parallel[@]}" "$@"
