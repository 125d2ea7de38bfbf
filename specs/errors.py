"""One user-facing error type, printed in one grammar: ``subject | problem. Note: what was expected``.

Raised for bad input (files, fields, packs, options). Caught once at the CLI edge (`cli_entry`), printed
without a traceback, exit code 1. Bugs in our own code stay ordinary exceptions with tracebacks.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


class ToolError(Exception):
    """A problem with the user's input, stated so that it can be fixed without reading code."""

    def __init__(self, subject: str | os.PathLike[str], problem: str, expected: str | None = None):
        self.subject = str(subject)
        self.problem = problem.rstrip(".")
        self.expected = expected
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = f"{self.subject} | {self.problem}."
        if self.expected:
            text += f" Note: {self.expected}"
        return text


def cli_entry(func: F) -> F:
    """Wrap a CLI entry point: a ToolError becomes one line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ToolError as err:
            print(f"ERROR | {err.message}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("ERROR | interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
