"""Process-wide memory behaviour for long pushes. Entry points (the CLI, the app) opt in; importing does nothing."""

from __future__ import annotations

import ctypes
import functools
import platform

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
LARGE_BUFFER_BYTES = 128 * 1024


@functools.cache
def return_large_buffers_to_the_system() -> bool:
    """Make glibc give every buffer of 128 KiB or more back to the system as soon as it is freed.

    128 KiB is glibc's own starting threshold for that; by default glibc raises it each time such a buffer
    is freed, up to 32 MiB. An upload holds its batch's images several times over for a moment (the bytes,
    their base64, the JSON text, the request body: ~65 MB for 64 camera frames), and once the threshold has
    risen those buffers come from the heap, where freed memory stays with the process and fragments across
    threads. Fixing the threshold keeps the peak resident memory of a push where the work in flight puts
    it: 408 -> ~300 MB at 10,000 blobs in `bench/`. Once per process; returns whether it took effect
    (False on anything but glibc).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES))
    except (OSError, AttributeError):
        return False
