"""What every stage shares: argv, reading the stage's resolved params, and the one-line
error contract.

Only the `params` stage validates the whole params file; every other stage reads what it
computes from its resolved params (resolved/<stage>/<name>.json, pipeline/resolved/) and,
if it reads shards or runs Ray, where they are from the params file (pipeline/where.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from pipeline.errors import UserError, one_line
from pipeline.params.base import ParamsError, read_params_yaml, section
from pipeline.resolved.base import load_resolved

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def catch_ctrl_c() -> Callable[[], bool]:
    """Make Ctrl-C raise SystemExit, and return a check of whether it came. SystemExit
    unwinds the stage, so its atomic writers drop what they were writing (pipeline/io.py).
    Libraries may install their own handler meanwhile (Ray Train's `fit` aborts the run on
    Ctrl-C, and Ray's `get` then raises SystemExit(1)), so the check reads the signal
    wake-up pipe, which records every signal whatever handler runs. A second Ctrl-C is
    ignored, so it cannot cut the clean-up short."""
    read_end, write_end = os.pipe()
    for end in (read_end, write_end):
        os.set_blocking(end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def on_ctrl_c(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.exit(EXIT_INTERRUPTED)

    def interrupted() -> bool:
        try:
            return bytes([signal.SIGINT]) in os.read(read_end, 4096)
        except BlockingIOError:  # no signal came
            return False

    signal.signal(signal.SIGINT, on_ctrl_c)
    return interrupted


def stage_cli(body: Callable[[str, str | None], None], item: str | None = None) -> None:
    """Parse `[NAME] [--params PATH]` and run `body(params_file, name)`; a user error is
    printed as one line starting with the file or params key to fix, and exits 2; Ctrl-C
    exits 130 with no traceback.

    `item` is the params section that NAME must be a key of (`runs` or `datasets`).
    """
    interrupted = catch_ctrl_c()
    parser = argparse.ArgumentParser()
    if item:
        parser.add_argument("name", help=f"a key of `{item}` in params.yaml")
    parser.add_argument("--params", default="params.yaml", help="params file")
    args = parser.parse_args()
    try:
        body(args.params, getattr(args, "name", None))
    except ParamsError as exc:  # `<params file>: <key>: <message>`, a line per problem
        for line in ParamsError(exc.errors, args.params).lines():
            print(one_line(line), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except UserError as exc:  # `<file>: <message>`
        print(one_line(str(exc)), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except BaseException:
        # Ctrl-C: exit 130, no traceback, whatever the interruption turned into on its way
        # out (Ray's `get` raises its own SystemExit(1)); DVC then prints the one line
        # naming the stage
        if interrupted():
            sys.exit(EXIT_INTERRUPTED)
        raise


@dataclass(frozen=True)
class Stage:
    """What a stage reads: `resolved/<name>/<item name>.json` as `model`, and, through
    `where` (for stages that read shards or run Ray), those sections of the params file.
    `item` is the params section its NAME is a key of (`runs`, `datasets`; None: no NAME).
    """

    name: str
    model: type[BaseModel]
    item: str | None = None
    where: Callable[[Any, str], Any] | None = None

    def inputs(self, name: str | None, params_file: str = "params.yaml") -> tuple:
        """The arguments of the stage's `main`: its resolved params, NAME, [where]."""
        data = read_params_yaml(params_file)
        if self.item and not isinstance(section(data, self.item, name), dict):
            raise ParamsError([(f"{self.item}.{name}", f"no such entry in {self.item}")],
                              params_file)
        params = load_resolved(self.model, self.name, name or self.name)
        return (params, name, *((self.where(data, params_file),) if self.where else ()))


def run_stage(main: Callable[..., None], stage: Stage) -> None:
    """The command line of `stage`: `main(*stage.inputs(NAME, --params))`."""
    stage_cli(lambda params_file, name: main(*stage.inputs(name, params_file)), stage.item)
