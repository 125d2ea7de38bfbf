"""Where the tools write: the rules every output path follows, checked before any work, and one writer.

- `-` is standard output (where a tool offers it).
- A regular file (or nothing yet) is written to a hidden `.NAME.part` sibling and renamed over the target only
  when complete, so a failure or a signal leaves the old file untouched and no partial file behind.
- A FIFO or character device (a pipe, /dev/null, a sound device) is written in place, streamed, never replaced.
- A symbolic link is followed: the rules apply to what it points to (stated in the log line of the tool).
- A directory, a socket or a block device is refused; so is a location that cannot be written.
Missing parent directories are created and removed again if the tool fails.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from specs.errors import ToolError

STDOUT = "-"


@dataclass
class OutputTarget:
    path: Path  # as given
    real: Path  # where the bytes go (a followed symlink's target)
    kind: str  # "stdout" | "file" | "stream" (FIFO / character device)
    created_dirs: list[Path] = field(default_factory=list)

    @property
    def followed_link(self) -> bool:
        return self.kind != "stdout" and self.path.is_symlink()


def check_output(path: str | Path, what: str, allow_stdout: bool = False) -> OutputTarget:
    """The target of an output option, checked (nothing is created yet)."""
    if str(path) == STDOUT:
        if not allow_stdout:
            raise ToolError(what, "cannot be '-' (standard output)", "a file path")
        return OutputTarget(Path(STDOUT), Path(STDOUT), "stdout")
    path = Path(path)
    real = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise ToolError(path, f"{what} cannot be checked ({e.strerror})", "a writable file path") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise ToolError(path, f"{what} is a directory", "a file path (e.g. DIR/out.wav)")
        if stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
            if not os.access(real, os.W_OK):
                raise ToolError(path, f"{what} is not writable", "a device or FIFO this user may write")
            return OutputTarget(path, real, "stream")
        if not stat.S_ISREG(st.st_mode):
            raise ToolError(
                path,
                f"{what} is neither a regular file, a FIFO nor a character device",
                "a file path; sockets and block devices are never written",
            )
    parent = _existing_parent(real)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ToolError(real.parent, f"cannot write {what} here (directory not writable)", "a writable location")
    if st is not None and not os.access(real, os.W_OK):
        raise ToolError(path, f"{what} exists and is read-only", "a writable file, or another path")
    return OutputTarget(path, real, "file")


def _existing_parent(path: Path) -> Path:
    p = path.absolute().parent
    while not p.exists():
        if p.is_symlink() or p == p.parent:
            break
        p = p.parent
    if p.exists() and not p.is_dir():
        raise ToolError(p, "is not a directory", "an output path whose parents are directories")
    return p


class OutputFile:
    """A binary output written by the rules above: `with OutputFile(target) as f: f.write(b)`; `f.path` is where
    the bytes go while writing (the .part file for regular targets)."""

    def __init__(self, target: OutputTarget):
        self.target = target
        self.ok = False
        self._f: BinaryIO | None = None
        self.path = target.real
        if target.kind == "file":
            self.path = target.real.with_name(f".{target.real.name}.part")

    def __enter__(self) -> OutputFile:
        t = self.target
        if t.kind == "stdout":
            import sys

            self._f = sys.stdout.buffer
            return self
        if t.kind == "file":
            t.created_dirs = make_parents(t.real.parent)
        try:
            self._f = open(self.path, "wb" if t.kind == "file" else "ab", buffering=0 if t.kind == "stream" else -1)
        except OSError as e:
            self._cleanup()
            raise ToolError(t.path, f"cannot be written ({e.strerror})", "a writable location") from None
        return self

    def write(self, data: bytes) -> None:
        assert self._f is not None, "write() outside the with block"
        try:
            self._f.write(data)
            if self.target.kind != "file":
                self._f.flush()
        except BrokenPipeError:
            raise ToolError(self.target.path, "the reader closed the pipe", "a reader that takes every byte") from None
        except OSError as e:
            raise ToolError(self.target.path, f"write failed ({e.strerror})", "space and permission to write") from None

    def rewrite_at(self, offset: int, data: bytes) -> None:
        """Overwrite bytes already written (e.g. a header's sizes); regular targets only."""
        assert self._f is not None and self.target.kind == "file"
        end = self._f.tell()
        self._f.seek(offset)
        self._f.write(data)
        self._f.seek(end)

    def commit(self) -> None:
        """Mark the output complete: on exit it is renamed into place (regular targets)."""
        self.ok = True

    def __exit__(self, exc_type, exc, tb) -> None:
        t = self.target
        if t.kind == "stdout":
            return
        try:
            if self._f is not None:
                self._f.close()
        except OSError:
            pass
        if t.kind == "file" and self.ok and exc_type is None:
            os.replace(self.path, t.real)
            return
        self._cleanup()

    def _cleanup(self) -> None:
        if self.target.kind == "file":
            Path(self.path).unlink(missing_ok=True)
            remove_dirs(self.target.created_dirs)


def make_parents(directory: Path) -> list[Path]:
    """mkdir -p, returning the directories it created (deepest last) so a failure can remove them."""
    created: list[Path] = []
    d = directory.absolute()
    missing = []
    while not d.exists():
        missing.append(d)
        d = d.parent
    for m in reversed(missing):
        try:
            m.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            remove_dirs(created)
            raise ToolError(m, f"cannot be created ({e.strerror})", "a writable location") from None
        created.append(m)
    return created


def remove_dirs(created: list[Path]) -> None:
    """Remove directories `make_parents` created, deepest first, if they are still empty."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            break
