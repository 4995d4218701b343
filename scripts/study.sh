#!/usr/bin/env bash
# Run a study (studies/<name>/, a DVC pipeline of its own) or bring it up to date; its
# outputs stay under studies/<name>/ (report: studies/<name>/reports/). Extra arguments go
# to `dvc repro`. `--sync` regenerates every study's dvc.yaml from the root one.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python scripts/study.py "$@"
