"""One user-facing error type, printed in one grammar: ``subject | problem. Note: what was expected``.

Raised for bad input (files, fields, packs, options). Caught once at the CLI edge (`cli_entry`), printed
without a traceback, exit code 1. Bugs in our own code stay ordinary exceptions with tracebacks.

SIGINT and SIGTERM (what a service manager sends) are turned into `Interrupted`, a BaseException that no
`except Exception` swallows, so every `finally` and context manager on the way out removes what it was writing
(`.part` files, temporary packs and bundles); the tool then prints one line and exits 130 or 143.
"""

from __future__ import annotations

import functools
import os
import signal
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


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: unwind (cleaning up), then exit 128 + signal number."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


_RECEIVED: list[int] = []  # the signal that interrupted this process, if one did


def _raise_interrupted(signum, frame) -> None:
    for s in (signal.SIGINT, signal.SIGTERM):  # a second signal while cleaning up must not cut the cleanup
        signal.signal(s, signal.SIG_IGN)
    _RECEIVED.append(signum)
    raise Interrupted(signum)


def _exit_interrupted(signum: int) -> None:
    print(f"ERROR | interrupted by {signal.Signals(signum).name}; partial outputs removed", file=sys.stderr)
    sys.exit(128 + signum)


def cli_entry(func: F) -> F:
    """Wrap a CLI entry point: a ToolError becomes one line on stderr and exit code 1; SIGINT / SIGTERM clean up
    and exit 130 / 143."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, _raise_interrupted)
        try:
            return func(*args, **kwargs)
        except ToolError as err:
            if _RECEIVED:  # the signal landed where a library wrapped it (e.g. an extension module's import)
                _exit_interrupted(_RECEIVED[0])
            print(f"ERROR | {err.message}", file=sys.stderr)
            sys.exit(1)
        except (Interrupted, KeyboardInterrupt) as err:
            _exit_interrupted(err.signum if isinstance(err, Interrupted) else int(signal.SIGINT))
        except Exception:
            if _RECEIVED:
                _exit_interrupted(_RECEIVED[0])
            raise

    return wrapper  # type: ignore[return-value]
