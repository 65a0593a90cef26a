"""Look for decrypted images and secrets where the tool could have written them."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", ".venv-sczpy", "node_modules", "__pycache__", "test-artifacts", ".hypothesis"}
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
MAX_FILE = 256 * 1024 * 1024


@dataclass(frozen=True)
class Finding:
    path: Path
    what: str


def writable_areas(extra: Iterable[Path] = ()) -> list[Path]:
    """The repo, temp folders, the home caches Streamlit and Python use, and anything extra (the ledger)."""
    home = Path.home()
    areas = [
        REPO,
        Path(tempfile.gettempdir()),
        home / ".cache",
        home / ".streamlit",
        home / ".percept-curator",
        home / ".local" / "share",
        *extra,
    ]
    return [a for a in dict.fromkeys(areas) if a.exists()]


def _files(roots: Iterable[Path], exclude: Iterable[Path]) -> Iterable[Path]:
    excluded = {p.resolve() for p in exclude}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and (here / d).resolve() not in excluded]
            for name in files:
                path = here / name
                if path.is_file() and not path.is_symlink() and path.resolve() not in excluded:
                    yield path


def scan(
    *,
    plaintexts: Iterable[bytes] = (),
    secrets: Iterable[str] = (),
    roots: Iterable[Path] | None = None,
    exclude: Iterable[Path] = (),
    images_newer_than: float | None = None,
) -> list[Finding]:
    """Files that hold a plaintext (by sha256 and by a slice of its bytes), a secret, or, when
    `images_newer_than` is given, any image file written since then."""
    plaintexts = [p for p in plaintexts if len(p) >= 64]
    digests = {hashlib.sha256(p).hexdigest() for p in plaintexts}
    # A slice from the start, the middle and the end, so that a partial copy is found too.
    slices = [p[i : i + 48] for p in plaintexts for i in (16, len(p) // 2, len(p) - 64)]
    secret_bytes = [s.encode() for s in secrets if s and len(s) >= 8]
    findings: list[Finding] = []
    for path in _files(roots or writable_areas(), exclude):
        try:
            stat = path.stat()
            if stat.st_size == 0 or stat.st_size > MAX_FILE:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if hashlib.sha256(data).hexdigest() in digests:
            findings.append(Finding(path, "a decrypted image (same sha256)"))
        elif any(chunk in data for chunk in slices):
            findings.append(Finding(path, "bytes of a decrypted image"))
        for secret in secret_bytes:
            if secret in data:
                findings.append(Finding(path, "a secret"))
                break
        if images_newer_than is not None and stat.st_mtime >= images_newer_than and data.startswith(IMAGE_MAGIC):
            findings.append(Finding(path, "an image file written during the run"))
    return findings
