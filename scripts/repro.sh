#!/usr/bin/env bash
# Set everything up and run the whole pipeline (dvc repro) on the embedded default.
# Extra arguments go to `dvc repro` (e.g. a stage name, --force).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
if [ ! -d .git ] && [ ! -f .git ]; then
  echo "dvc needs a git repository: run this inside the cloned repository" >&2
  exit 2
fi
dvc repro "$@"
dvc metrics show
