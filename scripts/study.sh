#!/usr/bin/env bash
# Run a study (studies/<name>/params.yaml) through the pipeline and keep its report in
# studies/<name>/report/. Extra arguments go to `dvc repro`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python scripts/study.py "$@"
