"""Where a Ray stage (pretrain, features) reads its shards and where it runs: the
`datasets.<name>.publish` sections and `ray:` of the params file. Neither decides a result
(except `ray.num_workers`, pretrain@ reads from its resolved params), so neither is
declared as a param in dvc.yaml (pipeline/where.py, pipeline/params/ray.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.params.ray import RayConfig, load_ray
from pipeline.where import Where, load_where


@dataclass(frozen=True)
class Located:
    """Where a Ray stage reads its shards and where it runs (neither decides the result)."""

    where: Where
    ray: RayConfig


def locate(data: Any, source: str) -> Located:
    """`load_where` and the `ray:` section (`load_ray`) of parsed params YAML."""
    return Located(load_where(data, source), load_ray(data, source))
