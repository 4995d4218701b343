"""params: validate params.yaml and write each stage's resolved params to resolved/.

Every other stage depends on its own file there (see pipeline/resolved/), so a stage
reruns exactly when a param it reads changes, defaults included. Mappings keep the order
of params.yaml (the report lists runs in it).
"""

from __future__ import annotations

import json

from pipeline.io import atomic_dir
from pipeline.params.schema import Params, load_params
from pipeline.resolved.base import RESOLVED_DIR
from pipeline.resolved.write import stage_params
from stages._common import stage_cli


def main(params: Params) -> None:
    files = stage_params(params)
    with atomic_dir(RESOLVED_DIR) as out:
        for path, model in files.items():
            target = out / path.relative_to(RESOLVED_DIR)
            target.parent.mkdir(parents=True, exist_ok=True)
            values = model.model_dump(mode="json")
            target.write_text(json.dumps(values, indent=1) + "\n")  # params.yaml order
    print(f"params: {len(params.datasets)} datasets, {len(params.runs)} runs x "
          f"{len(params.seeds)} seeds -> {RESOLVED_DIR}/")


def cli() -> None:
    """`python -m stages.params [--params PATH]`."""
    stage_cli(lambda params_file, _: main(load_params(params_file)))


if __name__ == "__main__":
    cli()
