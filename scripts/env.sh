#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install the project
# into it. Sourced by scripts/repro.sh and scripts/test.sh; reinstalls only when
# pyproject.toml changes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SSL_PIPELINE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  echo "Setting up $VENV (first run installs torch, ray and dvc: a few minutes)..."
  "$PYTHON" -m venv "$VENV"
  # --no-compile: Python byte-compiles the modules it imports on first use instead of pip
  # compiling all of torch up front (saves more than a minute of setup).
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile \
    -e "$ROOT[dev]" 2>&1 \
    | { grep -v "^WARNING: Location" || true; }
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
cd "$ROOT"
