"""Errors a user can cause (bad data paths, corrupt shards, missing checkpoints).

Stages turn these into one line naming the file or key and exit code 2.
"""


class UserError(Exception):
    """A problem with the user's inputs, stated in one line that names the file or key."""
