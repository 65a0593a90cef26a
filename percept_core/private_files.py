"""Files only their owner can read, for the plaintext a user asked to have on disk (`decrypt --out`, exports):
created 0600 whatever the umask, never through a symlink or into an existing file."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

# O_EXCL never opens what is already there (a file, a symlink, a FIFO); O_NOFOLLOW says so again.
_PRIVATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def create_private(path: Path, data: bytes) -> None:
    """Write `data` to a new file only the user can read (0600 whatever the umask); nothing existing is opened."""
    fd = os.open(path, _PRIVATE_FLAGS, 0o600)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # the umask can only take bits away: make it exactly 0600
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        if fd >= 0:
            os.close(fd)
        path.unlink(missing_ok=True)
        raise


def replace_private(path: Path, data: bytes) -> None:
    """Replace whatever is at `path` with a new private file, atomically: a symlink there is replaced, not
    followed, and another hard link of an old file keeps its content."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    create_private(temporary, data)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # the rename itself survives a crash once the folder is synced
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
