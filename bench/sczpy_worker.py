"""The original sample's decryption: the real sczpy 0.0.8 in its own environment, as a long-running worker.

The original Azure Function built `sczpy.SCZClient` once, at import, in a long-running Functions worker,
and then, per blob, called `client.decrypt(model, version, file, file)`: the key fetched from the MM
server and 100,000 PBKDF2-SHA512 rounds run for every file, ciphertext read from and plaintext written
to disk. `tests/compat/sczpy_oracle.py serve` is that worker; interpreter start-up and the bootstrap are
paid once and reported, never charged per file (charging them would flatter us).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .stack import ROOT, BenchStack, clean_environ

SCZPY_PYTHON = ROOT / ".venv-sczpy" / "bin" / "python"
ORACLE = ROOT / "tests" / "compat" / "sczpy_oracle.py"


class SczpyWorker:
    def __init__(self, stack: BenchStack) -> None:
        if not SCZPY_PYTHON.exists():
            raise SystemExit(f"bench: {SCZPY_PYTHON} is missing; run `make .venv-sczpy/.installed` (make bench does)")
        env = clean_environ({"SCZ_BOOTSTRAP_SECRET": stack.bootstrap_secret})
        env.pop("PYTHONPATH", None)  # the oracle must never import percept_core
        self.process = subprocess.Popen(
            [str(SCZPY_PYTHON), str(ORACLE), "serve", stack.mm_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            cwd=ROOT,
        )
        ready = self._read()
        if not ready.get("ready"):
            raise RuntimeError(f"the sczpy worker did not start: {ready}")
        self.bootstrap_seconds = float(ready["bootstrap_seconds"])

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the sczpy worker exited ({self.process.poll()})")
        return json.loads(line)

    def decrypt(
        self, model: tuple[str, str], pairs: list[tuple[Path, Path]], *, sha256: bool = False, remove: bool = False
    ) -> dict:
        """sczpy's client.decrypt for each (ciphertext file, plaintext file); per-file seconds and results."""
        request = {
            "op": "decrypt",
            "model": model[0],
            "version": model[1],
            "pairs": [[str(a), str(b)] for a, b in pairs],
            "sha256": sha256,
            "remove": remove,
        }
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(10)

    def __enter__(self) -> SczpyWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
