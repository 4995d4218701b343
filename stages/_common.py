"""What every stage shares: argv, params validation and the one-line error contract."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from pipeline.errors import UserError, one_line
from pipeline.params import Params, ParamsError, load_params

EXIT_USER_ERROR = 2


def run_stage(main: Callable[[Params, str | None], None], item: str | None = None) -> None:
    """Parse `[NAME] [--params PATH]`, validate params, run `main`; a user error is printed
    as one line starting with the file or params key to fix, and exits 2.

    `item` is the params section that NAME must be a key of (`runs` or `datasets`).
    """
    parser = argparse.ArgumentParser()
    if item:
        parser.add_argument("name", help=f"a key of `{item}` in params.yaml")
    parser.add_argument("--params", default="params.yaml", help="params file")
    args = parser.parse_args()
    try:
        params = load_params(args.params)
        name = getattr(args, "name", None)
        if item and name not in getattr(params, item):
            raise ParamsError([(f"{item}.{name}", f"no such entry in {item}")], args.params)
        main(params, name)
    except ParamsError as exc:  # `<params file>: <key>: <message>`, a line per problem
        for line in ParamsError(exc.errors, args.params).lines():
            print(one_line(line), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except UserError as exc:  # `<file>: <message>`
        print(one_line(str(exc)), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
