# Sourced by scripts/demo.sh and scripts/test.sh: create or reuse .venv and install the project
# into it, skipping pip entirely when pyproject.toml and the constraints have not changed.
# Usage: F5APP_EXTRAS=dev source scripts/_bootstrap.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${F5APP_VENV:-$ROOT/.venv}"
EXTRAS="${F5APP_EXTRAS:-}"
PYTHON_BIN="${PYTHON:-$(command -v python3.11 || command -v python3)}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[f5app] creating $VENV with $PYTHON_BIN" >&2
  "$PYTHON_BIN" -m venv "$VENV"
fi

suffix="${EXTRAS:+[$EXTRAS]}"
spec=".$suffix"
stamp="$VENV/.f5app-install-stamp"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/constraints.txt" | sha256sum | cut -d' ' -f1) $spec"
if ! grep -qxF "$want" "$stamp" 2>/dev/null; then
  echo "[f5app] installing $spec into $VENV (first time takes a few minutes)" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
  "$VENV/bin/python" -m pip install --quiet -c "$ROOT/scripts/constraints.txt" -e "$ROOT$suffix"
  echo "$want" >> "$stamp"
else
  echo "[f5app] $VENV is up to date ($spec)" >&2
fi
export PATH="$VENV/bin:$PATH"
