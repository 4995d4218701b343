#!/usr/bin/env bash
# Set everything up and run the tests (lint first). Extra arguments go to pytest.
# Test modules run in TEST_WORKERS processes (default 2, one per core here; 0 runs them in
# this one), a module per process at a time, the longest first (tests/conftest.py).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ruff check pipeline stages tests benchmarks
python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
