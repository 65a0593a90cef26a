"""Previewing decrypts in memory only: afterwards no decrypted frame exists anywhere the tool can write."""

from __future__ import annotations

import time

from percept_core import Curator
from tests.support.disk_scan import scan, writable_areas


def test_previews_leave_no_plaintext_on_disk(demo, stack, tmp_path_factory):
    started = time.time()
    curator = Curator(stack.settings(percept_ledger_path=str(tmp_path_factory.mktemp("ledger") / "l.sqlite")))
    plaintexts = []
    for blob in curator.blobs():
        if blob.name in demo.bad.values():
            continue
        plaintexts.append(curator.decrypt(blob))
        assert curator.preview(blob)
    assert len(plaintexts) == demo.frames
    findings = scan(
        plaintexts=plaintexts,
        roots=writable_areas([curator.ledger.path.parent]),
        exclude=[tmp_path_factory.getbasetemp().parent],  # the tests' own scratch space, this run and earlier ones
        images_newer_than=started,
    )
    assert findings == []


def test_the_scan_would_see_a_plaintext_written_to_disk(demo, stack, tmp_path):
    """The check above can fail: a frame written to the temp folder is found."""
    curator = Curator(stack.settings())
    blob = next(b for b in curator.blobs() if b.name not in demo.bad.values())
    plaintext = curator.decrypt(blob)
    leaked = tmp_path / "leak.bin"
    leaked.write_bytes(b"header" + plaintext)
    findings = scan(plaintexts=[plaintext], roots=[tmp_path], images_newer_than=time.time() - 60)
    assert [f.path for f in findings] == [leaked]
