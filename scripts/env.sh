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
  echo "Setting up $VENV (the first run installs torch, Ray and DVC)..."
  started=$SECONDS
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" "$ROOT/scripts/install.py" "$VENV"
  echo "Installed in $((SECONDS - started)) s."
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
cd "$ROOT"
