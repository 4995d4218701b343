"""Errors a user can cause (bad data paths, corrupt shards, missing checkpoints).

Stages turn these into one line naming the file or key and exit code 2: `<file>: <message>`
for a file, `<params file>: <key>: <message>` (a `pipeline.params.base.ParamsError`) for a
value of params.yaml.
"""


class UserError(Exception):
    """A problem with the user's inputs, stated in one line that names the file or key."""


def one_line(message: str) -> str:
    """`message` on one line: text quoted from other libraries (torch, PIL, pydantic) may
    span several, and a user error is reported as exactly one."""
    return " ".join(message.split())
