"""Class balance: each tag's images in the project and in a push, per model version, and a warning only when a push
would make the imbalance worse past the ratio set by `percept_max_class_imbalance`."""

from __future__ import annotations

import pytest

from percept_core import ConfigError, Settings
from percept_core.balance import ProjectTagCounts, class_balance, imbalance_warning
from tests.core.fakes import frame_blob


def frames(count: int, *, model_version: str = "1") -> list:
    return [frame_blob(f"v{model_version}-{i}.jpg", model_version=model_version) for i in range(count)]


def rows_after(project: dict[str, int], pushed: int, chosen: list[str]):
    return class_balance(ProjectTagCounts(project), frames(pushed), chosen)


def test_each_tag_counts_its_project_images_and_the_selected_frames_a_push_adds():
    counts = ProjectTagCounts({"empty-shelf": 0, "person": 5, "product": 2})
    selection = frames(2, model_version="1") + frames(1, model_version="2")

    rows = class_balance(counts, selection, ["Person", "forklift"])  # tags match whatever their case

    assert [(r.tag, r.in_project, r.in_selection, r.after_push) for r in rows] == [
        ("empty-shelf", 0, 0, 0),
        ("person", 5, 3, 8),
        ("product", 2, 0, 2),
        ("forklift", 0, 3, 3),  # a chosen tag the counts do not know yet comes last
    ]
    person = rows[1]
    assert person.selection_by_version == {"ssd 1": 2, "ssd 2": 1}
    assert person.project_by_version is None  # the project's images were not listed
    assert rows[2].selection_by_version == {}


def test_a_frame_with_accepted_suggested_tags_counts_for_its_own_tags_only():
    counts = ProjectTagCounts({"person": 5, "product": 2})
    selection = frames(3)
    own = {selection[0].name: ["Product"], selection[1].name: ["person", "product"]}  # accepted suggestions

    rows = class_balance(counts, selection, ["person"], own)  # the third frame goes with the chosen tag

    assert [(r.tag, r.in_selection) for r in rows] == [("person", 2), ("product", 2)]


def test_per_model_version_counts_go_with_their_tag_when_the_project_was_listed():
    counts = ProjectTagCounts(
        {"person": 3, "product": 1}, by_version={"person": {"ssd 1": 2, "? ?": 1}, "product": {"ssd 2": 1}}
    )

    rows = class_balance(counts, frames(4, model_version="2"), ["product"])

    assert {r.tag: r.project_by_version for r in rows} == {"person": {"ssd 1": 2, "? ?": 1}, "product": {"ssd 2": 1}}
    assert {r.tag: r.selection_by_version for r in rows} == {"person": {}, "product": {"ssd 2": 4}}


def test_a_push_that_takes_the_imbalance_past_the_ratio_warns_with_the_tags_and_what_to_do():
    rows = rows_after({"person": 8, "product": 1}, 3, ["person"])  # 8:1 now, 11:1 after

    warning = imbalance_warning(rows, max_ratio=10)

    assert warning == (
        "This push would leave tag 'person' with 11 images against 1 of tag 'product': 11:1, past the 10:1 the "
        "setting percept_max_class_imbalance allows (it is 8:1 now). A model trained on it learns to favour "
        "'person': push frames of 'product' first, or fewer frames with 'person'."
    )


def test_a_push_that_lessens_an_imbalance_past_the_ratio_does_not_warn():
    rows = rows_after({"person": 30, "product": 1}, 1, ["product"])  # 30:1 now, 15:1 after: still past 10:1

    assert imbalance_warning(rows, max_ratio=10) is None


def test_a_push_that_worsens_the_imbalance_within_the_ratio_does_not_warn():
    rows = rows_after({"person": 5, "product": 1}, 3, ["person"])  # 5:1 now, 8:1 after

    assert imbalance_warning(rows, max_ratio=10) is None
    assert "8:1, past the 5:1" in imbalance_warning(rows, max_ratio=5)  # a stricter setting speaks up


def test_tags_without_images_and_untagged_pushes_never_warn():
    untagged = rows_after({"person": 40, "product": 2, "empty-shelf": 0}, 10, [])  # 20:1, left as it is

    assert imbalance_warning(untagged, max_ratio=10) is None
    assert imbalance_warning(rows_after({}, 5, []), max_ratio=1) is None  # no tag at all
    assert imbalance_warning(rows_after({"a": 0, "b": 0}, 5, ["a", "b"]), max_ratio=1) is None  # 5:5


def test_the_ratio_is_a_setting_with_a_default_of_ten_to_one(clean_environment, monkeypatch):
    assert Settings.load().max_class_imbalance == 10
    monkeypatch.setenv("percept_max_class_imbalance", "2.5")
    assert Settings.load().max_class_imbalance == 2.5

    monkeypatch.setenv("percept_max_class_imbalance", "ten")
    with pytest.raises(ConfigError, match="percept_max_class_imbalance must be a number"):
        Settings.load()
    monkeypatch.setenv("percept_max_class_imbalance", "0.5")
    with pytest.raises(ConfigError, match="percept_max_class_imbalance must be a ratio of 1 or more"):
        Settings.load()
