"""Process-wide memory behaviour for long pushes. Entry points (the CLI, the app) opt in; importing does nothing."""

from __future__ import annotations

import ctypes
import platform

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
LARGE_BUFFER_BYTES = 1024 * 1024


def return_large_buffers_to_the_system() -> bool:
    """Make glibc give every buffer of 1 MiB or more back to the system as soon as it is freed.

    An upload holds its batch's images several times over for a moment (the bytes, their base64, the JSON
    text, the request body: ~65 MB for 64 camera frames). glibc raises its mmap threshold each time such a
    buffer is freed, after which the next ones come from the heap, where freed memory stays with the process
    and fragments across threads. Fixing the threshold keeps the peak resident memory of a push where the
    work in flight puts it: ~90 MB less at 10,000 blobs in `bench/`. Returns whether it took effect (False
    on anything but glibc).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES))
    except (OSError, AttributeError):
        return False
