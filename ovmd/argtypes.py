"""Argument types the commands share: a number of seconds that is a number, a file
descriptor that can be one.

``float()`` takes ``nan`` and ``inf``; a timeout of either would never expire, or fail
deep inside a ``select``. Import-free until an argument is refused (argparse is imported
only to raise its error).
"""
from __future__ import annotations


def seconds_problem(value: float, positive: bool = False, given: object = None) -> "str | None":
    """Why ``value`` is not a usable number of seconds (None if it is one); ``given`` is
    what the user typed, for the message."""
    if (0 < value if positive else 0 <= value) and value < float("inf"):
        return None  # nan fails every comparison
    return "expected seconds (%s), got %r" % ("more than 0" if positive else "0 or more",
                                             value if given is None else given)


def seconds(text: str) -> float:
    """argparse type: seconds, 0 or more, finite."""
    return _checked(text, False)


def positive_seconds(text: str) -> float:
    """argparse type: seconds, more than 0, finite."""
    return _checked(text, True)


def _checked(text: str, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    problem = seconds_problem(value, positive, text)
    if problem is None:
        return value
    import argparse

    raise argparse.ArgumentTypeError(problem)


#: The largest file descriptor number (an int in the kernel's interface).
MAX_DESCRIPTOR = 2 ** 31 - 1


def descriptor_problem(value: int) -> "str | None":
    """Why ``value`` cannot be a file descriptor number (None if it can)."""
    if 0 <= value <= MAX_DESCRIPTOR:
        return None
    return "expected a file descriptor number (0 or more), got %d" % value


def descriptor(text: str) -> int:
    """argparse type: a file descriptor number."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if descriptor_problem(value) is None:
        return value
    import argparse

    raise argparse.ArgumentTypeError("expected a file descriptor number (0 or more), got %r"
                                     % text)
