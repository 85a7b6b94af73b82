"""The user-facing error type, a leaf every module may import.

`UserError` marks bad input from the user (a parameter, a path, a missing earlier stage): the
command line prints it as one line with exit code 2 and no traceback. The library raises
`ValueError`/`FileNotFoundError` for the same kind of problem; `elchat.cli` treats all three alike.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: printed as one clear line, exit code 2, no traceback.

    Example: `raise UserError("parameter lang='xx': not a shipped language")`.
    """
