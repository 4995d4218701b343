"""What the driver processes of tests/cluster/ share: join the cluster at argv[1], run the
driver's work on the rest of argv, and end a user error as a stage does (one line, exit 2).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from pipeline.errors import UserError


def run_driver(work: Callable[..., None]) -> None:
    """`work(*argv[2:])` on the Ray cluster at argv[1]."""
    import ray

    try:
        ray.init(address=sys.argv[1], configure_logging=False)
        work(*sys.argv[2:])
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
