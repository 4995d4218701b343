"""The metrics each stage writes, as typed contracts between the stages and the report:
one module per stage (`pretrain`, `probe`, `transfer`, `geometry`), so that a stage's code
depends on its own contract only, and `base` for what they share.

A stage of run `r` writes `metrics/<stage>/r.json`, one entry per seed of the run
(`{"seed_0": {...}, "seed_1": {...}}`, which `dvc metrics show/diff` read as nested
keys). The report reads them back through these models, so a missing or malformed
metric is an error naming the file, never an empty column.
"""
