"""The Push untagged page: one click counts and asks to confirm, a background run with live progress, cancel,
resume; the Dry run alone only counts."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections import Counter

from pages._text import unescape
from percept_core.pipeline import version_label
from percept_core.review import push_selected
from tests.app.conftest import button, csv_rows, dialog, wait_until

PAGE = "views/push_untagged.py"


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def finished(at) -> str | None:
    """The run's verdict once the page shows it (polling the page as a reviewer would reload it)."""
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return next((m.value for m in [*at.success, *at.warning] if m.value.startswith(("**Finished**", "**Cancel"))), None)


def good_blobs(curator, demo):
    return [b for b in curator.blobs() if b.name not in demo.bad.values()]


def dry_run_table(at) -> dict[str, int]:
    """The Dry run's table on the page: what -> count."""
    table = at.dataframe[0].value
    return dict(zip(table["what"], table["count"], strict=True))


def confirmation(at) -> str:
    """The text of the open confirmation (the test fails if none is open)."""
    confirm = dialog(at)
    assert confirm is not None and confirm.proto.dialog.title == "Confirm push"
    return "\n".join(m.value for m in confirm.markdown)


def listed_counts(at, heading: str) -> dict[str, int]:
    """The `what: n` list under a bold heading of the open confirmation, as the reviewer reads it."""
    [block] = [m.value for m in dialog(at).markdown if m.value.startswith(f"**{heading}")]
    return {unescape(m[1]): int(m[2].replace(",", "")) for m in re.finditer(r"^- (.+): \*\*([\d,]+)\*\*$", block, re.M)}


def push_in_dialog(at):
    """Click the confirmation's push button, whatever count it carries."""
    [push] = [b for b in dialog(at).button if b.label.startswith("Push ")]
    return push.click().run()


def test_dry_run_first_shows_the_counts_as_a_table_and_charts(app_env, demo):
    curator = app_env.curator.with_actor("earlier-reviewer")
    blobs = good_blobs(curator, demo)
    push_selected(curator, blobs[:2])
    curator.reject(blobs[2:3])

    at = app_env.open(PAGE)
    assert not button(at, "Push all untagged").disabled  # no dry run asked for first
    button(at, "Dry run").click().run()
    assert not at.exception
    assert dialog(at) is None and len(app_env.project_images()) == 2  # it only counts: no confirmation, no push

    shown = metrics(at)
    assert shown["Eligible"] == str(len(blobs) - 3)
    assert shown["Already pushed"] == "2" and shown["Rejected"] == "1"
    assert shown["Cannot decrypt"] == "5" and shown["Duplicates by content"] == "0"
    assert shown["Project headroom"] == f"{100_000 - 2:,}"
    table = dict(zip(at.dataframe[0].value["what"], at.dataframe[0].value["count"], strict=True))
    assert table["Blobs listed"] == len(blobs) + 5
    assert table["Cannot decrypt: tampered"] == 2 and table["Cannot decrypt: missing metadata"] == 1
    charts = at.get("vega_lite_chart")
    assert len(charts) == 2  # eligible per model version, and per capture day


def test_one_click_counts_and_the_confirmed_push_runs_in_the_background_and_reports(app_env, demo, downloads):
    good = good_blobs(app_env.curator, demo)
    at = app_env.open(PAGE)
    button(at, "Push all untagged").click().run()  # no dry run before: the click counts
    eligible = len(good)
    assert f"Push **{eligible}** images untagged" in confirmation(at)
    assert any("Nothing is pushed twice" in c.value for c in dialog(at).caption)
    assert app_env.project_images() == []  # nothing goes before the reviewer confirms

    push_in_dialog(at)
    verdict = wait_until(lambda: finished(at), what="the push to finish")
    assert verdict.startswith("**Finished**") and f"{eligible} pushed, 5 undecryptable" in verdict
    rows = at.dataframe[0].value
    assert len(rows) == len(good) + 5 and set(rows["outcome"]) == {"pushed", "undecryptable"}
    assert set(rows.loc[rows["outcome"] == "undecryptable", "blob"]) == set(demo.bad.values())
    assert [d.label for d in at.download_button] == ["Download results (CSV)"]

    # The CSV is the run's outcomes: a row per blob, each pushed one with the id of its image in the project.
    [csv_name] = [name for name in downloads if name.startswith("push-all-")]
    header, csv_rows_ = csv_rows(downloads[csv_name])
    assert header == ["blob", "outcome", "reason", "image_id", "model_version", "fitted"]
    assert len(csv_rows_) == len(good) + 5
    images = {image.source_blob: image.id for image in app_env.project_images()}
    assert {r["blob"]: r["image_id"] for r in csv_rows_ if r["outcome"] == "pushed"} == images
    assert set(images) == {b.name for b in good}
    failed = {r["blob"]: r for r in csv_rows_ if r["outcome"] == "undecryptable"}
    assert set(failed) == set(demo.bad.values())
    assert all(r["reason"] and not r["image_id"] for r in failed.values())
    assert failed[demo.bad["tampered"]]["reason"].startswith("tampered")
    assert failed[demo.bad["no-metadata"]]["reason"].startswith("missing metadata")
    versions = {b.name: f"{b.model_name} {b.model_version}" for b in good}
    assert {r["blob"]: r["model_version"] for r in csv_rows_ if r["outcome"] == "pushed"} == versions

    trainer = app_env.trainer()
    assert trainer.get_untagged_image_count(app_env.project_id) == eligible
    assert trainer.get_tagged_image_count(app_env.project_id) == 0
    records = app_env.curator.records(good)  # the ledger knows each pushed blob by the id of its image
    assert {b.name: records[b.key].image_id for b in good} == images

    # Another tab (or the same reviewer after closing this one) finds the run's result.
    other = app_env.open(PAGE)
    assert any(m.value.startswith("**Finished**") for m in [*other.success, *other.warning])


LEFT_OUT = {  # the confirmation's reasons, and the Dry run table's rows that count them
    "already in the project": "Already pushed",
    "rejected": "Rejected",
    "near duplicates of a burst": "Near duplicates of a burst",
    "being pushed by another run": "Being pushed by another run",
    "duplicates by content": "Duplicates by content",
}


def test_the_confirmation_shows_the_counts_the_dry_run_shows(app_env, demo):
    curator = app_env.curator.with_actor("earlier-reviewer")
    blobs = good_blobs(curator, demo)
    push_selected(curator, blobs[:2])
    curator.reject(blobs[2:3])
    at = app_env.open(PAGE)
    button(at, "Dry run").click().run()
    looked = dry_run_table(at)

    button(at, "Push all untagged").click().run()
    eligible = looked["Eligible (will be pushed)"]
    assert eligible == len(blobs) - 3
    assert f"Push **{eligible}** images untagged" in confirmation(at)
    assert listed_counts(at, "By model version") == Counter(version_label(b) for b in blobs[3:])
    undecryptable = {what.lower(): n for what, n in looked.items() if what.startswith("Cannot decrypt: ")}
    left_out = {reason: looked[row] for reason, row in LEFT_OUT.items() if looked[row]} | undecryptable
    assert listed_counts(at, "Left out") == left_out
    assert left_out["already in the project"] == 2 and left_out["rejected"] == 1 and sum(undecryptable.values()) == 5
    assert f"**Left out: {sum(left_out.values())}**" in confirmation(at)
    assert "Not checked yet" not in confirmation(at)  # without a blob index the count reads every blob
    assert dry_run_table(at) == looked  # the page behind shows the click's count: the same


def test_cancel_closes_the_confirmation_and_pushes_nothing(app_env, demo):
    curator = app_env.curator.with_actor("earlier-reviewer")
    push_selected(curator, good_blobs(curator, demo)[:2])
    before = app_env.project_images()
    pushes = len(curator.ledger.events(action="push"))
    at = app_env.open(PAGE)

    button(at, "Push all untagged").click().run()
    assert "Push **" in confirmation(at)
    button(at, "Cancel").click().run()

    assert dialog(at) is None
    assert app_env.project_images() == before and len(curator.ledger.events(action="push")) == pushes
    at.run()  # and it stays closed, with nothing running
    assert dialog(at) is None and not [p for p in at.get("progress") if "Pushing:" in (p.proto.text or "")]


def test_with_nothing_to_push_the_confirmation_says_so_and_offers_no_push(app_env, demo):
    curator = app_env.curator.with_actor("earlier-reviewer")
    good = good_blobs(curator, demo)
    push_selected(curator, good)
    at = app_env.open(PAGE)

    button(at, "Push all untagged").click().run()
    assert "Nothing to push" in confirmation(at)
    assert listed_counts(at, "Left out")["already in the project"] == len(good)
    assert [b.label for b in dialog(at).button] == ["Close"]
    button(at, "Close").click().run()
    assert dialog(at) is None and len(app_env.project_images()) == len(good)


def test_the_click_counts_quickly_from_the_blob_index_unless_the_page_asks_for_a_deep_count(app_env, demo):
    curator = app_env.curator
    curator.sync_index()
    with_a_model = len([b for b in curator.data.list_blobs() if b.has_model])  # what metadata alone cannot condemn
    downloads = curator.data.downloads
    at = app_env.open(PAGE)

    button(at, "Push all untagged").click().run()
    assert f"Push **{with_a_model}** images untagged" in confirmation(at)
    assert listed_counts(at, "Not checked yet") == {"contents not read (a quick count)": with_a_model}
    assert curator.data.downloads == downloads  # quick: no blob was read
    button(at, "Cancel").click().run()

    at.toggle[0].set_value(True).run()
    button(at, "Push all untagged").click().run()
    assert "Not checked yet" not in confirmation(at)
    assert listed_counts(at, "Left out")["cannot decrypt: tampered"] == 2 and curator.data.downloads > downloads


def test_a_running_push_shows_live_progress_and_can_be_cancelled(app_env_factory, demo):
    harness = app_env_factory(custom_vision_rate_per_second="4")  # slow enough to watch and to cancel
    good = good_blobs(harness.curator, demo)
    at = harness.open(PAGE)
    button(at, "Push all untagged").click().run()
    push_in_dialog(at)

    def some_pushed():
        at.run()
        bars = [p for p in at.get("progress") if "Pushing:" in (p.proto.text or "")]
        return bars and int(metrics(at).get("Pushed", "0")) >= 2 and bars[0].proto.text

    text = wait_until(some_pushed, what="two images to be pushed")
    assert f"/{len(good) + 5} ·" in text and "images/s" in text
    button(at, "Cancel").click().run()

    verdict = wait_until(lambda: finished(at), what="the run to stop")
    assert verdict.startswith("**Cancelled**")
    rows = at.dataframe[0].value
    pushed = int((rows["outcome"] == "pushed").sum())
    assert 2 <= pushed < len(good)
    assert len(harness.project_images()) == pushed

    # What was not pushed stays eligible: the next dry run counts exactly the rest.
    button(at, "Dry run").click().run()
    assert metrics(at)["Already pushed"] == str(pushed)
    assert metrics(at)["Eligible"] == str(len(good) - pushed)


def test_an_interrupted_run_is_detected_and_the_next_run_resumes_it(app_env, demo):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_run = f"{socket.gethostname()}:{int(gone.stdout)}:0123456789ab"
    curator = app_env.curator
    good = good_blobs(curator, demo)
    held = good[:3]
    curator.ledger.claim([b.key for b in held], app_env.project_id, dead_run, actor="killed-app")

    at = app_env.open(PAGE)
    assert "**An interrupted run was detected:** 3 blobs were being pushed" in at.warning[0].value
    button(at, "Push all untagged").click().run()
    assert metrics(at)["Eligible"] == str(len(good))  # the click's count, on the page behind its confirmation
    push_in_dialog(at)
    wait_until(lambda: finished(at), what="the push to finish")

    assert not any("interrupted run" in w.value for w in at.warning)
    images = app_env.project_images()
    assert len(images) == len(good) == len({i.source_blob for i in images})  # each once
    assert {b.name for b in held} <= {i.source_blob for i in images}
    assert curator.ledger.claims(app_env.project_id) == []
