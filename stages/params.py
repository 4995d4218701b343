"""params: validate params.yaml and write each stage's resolved params to resolved/.

Every other stage depends on its own file there (see pipeline/resolved.py), so a stage
reruns exactly when a param it reads changes, defaults included.
"""

from __future__ import annotations

import json

from pipeline.io import atomic_dir
from pipeline.params import Params
from pipeline.resolved import RESOLVED_DIR, stage_params
from stages._common import run_stage


def main(params: Params, _: None) -> None:
    files = stage_params(params)
    with atomic_dir(RESOLVED_DIR) as out:
        for path, values in files.items():
            target = out / path.relative_to(RESOLVED_DIR)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")
    print(f"params: {len(params.datasets)} datasets, {len(params.runs)} runs x "
          f"{len(params.seeds)} seeds -> {RESOLVED_DIR}/")


if __name__ == "__main__":
    run_stage(main)
