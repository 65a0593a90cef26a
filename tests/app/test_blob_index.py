"""The app on a built blob index: the pager says how many blobs the filters match, and the dry run of Push
untagged counts from the index and the ledger without reading a blob."""

from __future__ import annotations

from percept_core.blobs import BlobFilter
from tests.app.conftest import button


def _counts(at) -> dict[str, int]:
    table = at.dataframe[0].value
    return dict(zip(table["what"], table["count"], strict=True))


def test_the_pager_counts_the_matches_once_the_index_is_built(app_env, demo):
    at = app_env.open("views/review.py")
    assert not any("matching" in m.value for m in at.markdown)  # no index: a count would list everything
    app_env.curator.sync_index()
    at.run()
    everything = app_env.curator.count(BlobFilter())
    assert everything == len(list(app_env.curator.data.list_blobs())) > 0
    shown = min(48, everything)
    assert any(f"· {shown} blobs of {everything:,} matching ·" in m.value for m in at.markdown)


def test_the_dry_run_counts_from_the_index_without_reading_a_blob(app_env, demo):
    curator = app_env.curator
    curator.sync_index()
    downloads = curator.data.downloads
    at = app_env.open("views/push_untagged.py")
    button(at, "Dry run").click().run()
    assert not at.exception
    counts = _counts(at)
    good = len([b for b in curator.data.list_blobs() if b.has_model])
    assert (
        counts["Eligible (will be pushed)"] == counts["Eligible, contents not read yet (checked while pushing)"] == good
    )
    assert curator.data.downloads == downloads

    at.toggle[0].set_value(True).run()
    button(at, "Dry run").click().run()
    counts = _counts(at)
    assert counts["Eligible, contents not read yet (checked while pushing)"] == 0
    assert counts["Cannot decrypt: tampered"] == 2 and curator.data.downloads > downloads
