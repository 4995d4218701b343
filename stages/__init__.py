"""One thin module per DVC stage: parse argv, load params, call the library, write outs.

Run as a stage (`python -m stages.<name>`), Ctrl-C anywhere in it, its imports included,
ends it with exit code 130 and no traceback: outputs are written atomically
(`pipeline/io.py`), so none is left half written, and DVC prints the one line naming the
stage. Imported any other way (tests), the package leaves signal handling alone.
"""

from __future__ import annotations

import signal
import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def _interrupted(signum: int, frame: object) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C cannot cut the clean-up
    sys.exit(EXIT_INTERRUPTED)


if sys.argv[:1] == ["-m"]:  # what runpy sets while it imports the package of `-m stages.x`
    signal.signal(signal.SIGINT, _interrupted)
