#!/usr/bin/env bash
# Set everything up and run the whole pipeline (dvc repro) on the embedded default.
# Extra arguments go to `dvc repro` (e.g. a stage name, --force, a study's dvc.yaml).
# Ctrl-C stops it with one line: the running stage writes nothing half-way, DVC locks only
# the stages that finished, and the local Ray cluster is shut down.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
if [ ! -d .git ] && [ ! -f .git ]; then
  echo "dvc needs a git repository: run this inside the cloned repository" >&2
  exit 2
fi
# When sharding, pretraining or feature extraction will run, start one local Ray cluster
# for all their stages (they join it through RAY_ADDRESS) instead of one per stage; it
# stops when this script exits.
# (grep reads all of `dvc status`: with -q it would stop early, and under pipefail the
# SIGPIPE that dvc then gets would make the test fail and the cluster never start.)
if [ -z "${RAY_ADDRESS:-}" ] && { [ $# -gt 0 ] || dvc status dvc.yaml 2>/dev/null | grep -E "^(shard|pretrain|features)@" >/dev/null; }
then
  ray_env="$(mktemp)"
  # in a session of its own: Ctrl-C reaches the stages, not Ray's processes; the trap stops it
  setsid python scripts/local_ray.py "$ray_env" &
  holder=$!
  trap 'kill $holder 2>/dev/null || true; wait $holder 2>/dev/null || true; rm -f "$ray_env"' EXIT
  until [ -s "$ray_env" ]; do
    kill -0 "$holder" 2>/dev/null || { echo "could not start a local Ray cluster" >&2; exit 1; }
    sleep 0.5
  done
  while IFS='=' read -r key value; do export "$key=$value"; done < "$ray_env"
fi
# Ctrl-C reaches dvc (and its stage) through the process group; DVC then fails the stage
# with one line, and this exits 130, as a shell reports Ctrl-C.
interrupted=0
trap 'interrupted=1' INT
dvc repro "$@" || { status=$?; [ "$interrupted" = 1 ] && exit 130; exit "$status"; }
trap - INT
cat "${REPRO_SUMMARY:-reports/summary.md}"  # scripts/study.py names its own
