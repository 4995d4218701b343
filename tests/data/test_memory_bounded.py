"""Peak memory does not grow with the dataset: the streamed loader and the evaluation reader
at 1x and 4x a base size, each in a fresh process measured against its own baseline
(benchmarks/stage_memory.py's measure), with the memory loader as the control that does
grow, so that the measure is shown able to see data held."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.stage_memory import IMAGE_BYTES, MIB, held_by_design, run_stage, write_dataset

BASE_MB = 8  # decoded size of a split at 1x
BUDGET_MB = BASE_MB // 2  # data.memory_budget_mb: `auto` streams at every scale
TOLERANCE_MB = 8  # allocator slack and timing: a third of what holding 4x would add
BASE_IMAGES = BASE_MB * MIB // IMAGE_BYTES


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("memory")
    return {scale: write_dataset(root / f"x{scale}", BASE_IMAGES * scale) for scale in (1, 4)}


def beyond_design(stage: str, scale: int, shard_dir: Path) -> float:
    """MiB the stage's process grew by, over its baseline and what it keeps by design."""
    peaks = run_stage(stage, shard_dir, BUDGET_MB)["peaks"]
    return (peaks["process"] - held_by_design(stage, BASE_IMAGES * scale)) / MIB


@pytest.mark.parametrize("stage", ["loader_stream", "features"])
def test_peak_memory_does_not_grow_with_the_data(datasets, stage):
    """4x the data (24 MiB more decoded images per split than 1x) adds at most the
    tolerance: the streamed loader's shuffle buffer and the reader's one shard are fixed."""
    small, large = (beyond_design(stage, scale, datasets[scale]) for scale in (1, 4))
    assert large <= small + TOLERANCE_MB, (small, large)


def test_the_memory_loader_is_seen_to_hold_its_split(datasets):
    """The control: the memory loader holds the 32 MiB split at 4x, and the same measure
    sees it (so the test above can fail)."""
    peaks = run_stage("loader_memory", datasets[4], BUDGET_MB)["peaks"]
    assert peaks["process"] >= 4 * BASE_IMAGES * IMAGE_BYTES
