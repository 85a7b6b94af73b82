"""The user-facing error type and the one integer check of user input (a leaf every module imports).

`UserError` marks bad input from the user (a parameter, a path, a missing earlier stage): the
command line prints it as one line with exit code 2 and no traceback. The library raises
`ValueError`/`FileNotFoundError` for the same kind of problem; `elchat.cli` treats all three alike.
"""
from __future__ import annotations


def is_count(value, minimum: int = 0) -> bool:
    """True for an integer (not a bool, which Python counts as one) of at least `minimum`.

    Example: `is_count(3, 1) is True`, `is_count(True, 1) is False`, `is_count(0, 1) is False`.
    """
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


class UserError(Exception):
    """Bad input from the user: printed as one clear line, exit code 2, no traceback.

    Example: `raise UserError("parameter lang='xx': not a shipped language")`.
    """
