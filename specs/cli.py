"""What every console script shares: the typer app settings and the plain console log."""

from __future__ import annotations

from collections.abc import Callable

import typer


def new_app() -> typer.Typer:
    """A typer app with -h/--help, no shell-completion options, and our own error printing (specs.errors)."""
    return typer.Typer(
        add_completion=False, pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]}
    )


def console_log(stderr: bool = True) -> Callable[[str], None]:
    """Print lines as they are (no rich markup or highlighting), wrapped only by the terminal."""
    from rich.console import Console

    console = Console(stderr=stderr, soft_wrap=True)
    return lambda line: console.print(line, markup=False, highlight=False)
