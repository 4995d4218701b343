#!/usr/bin/env bash
# Set everything up and run the tests (lint first). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ruff check pipeline stages tests benchmarks
python -m pytest "$@"
