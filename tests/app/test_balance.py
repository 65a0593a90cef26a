"""The Review page's class balance: per tag, the project's images and the frames this push would add (per model
version on request), and a warning when choosing a tag would make the imbalance worse past the setting."""

from __future__ import annotations

from pages._text import unescape
from percept_core.pipeline import version_label
from tests.app.conftest import button, tick, tile_names
from tests.support.frames import jpeg


def add_tagged_images(harness, tag: str, count: int) -> None:
    """`count` images tagged `tag` in the project, uploaded through the Custom Vision SDK (no provenance)."""
    trainer = harness.trainer()
    [tag_id] = [t.id for t in trainer.get_tags(harness.project_id) if t.name == tag]
    for seed in range(count):
        trainer.create_images_from_data(harness.project_id, jpeg(1000 + seed), tag_ids=[tag_id])


def panel(at):
    [expander] = [e for e in at.expander if e.label == "Class balance"]
    return expander


def counts(table) -> dict:
    """A table's rows by their index as a reviewer reads it (a tag, or a tag and a model version), its numbers."""
    frame = table.value

    def read(index):
        return tuple(unescape(str(i)) for i in index) if isinstance(index, tuple) else unescape(str(index))

    return {read(index): tuple(int(v) for v in row) for index, row in zip(frame.index, frame.values, strict=True)}


def test_the_panel_shows_the_projects_counts_and_the_selections_per_tag_and_per_model_version(app_env, demo):
    add_tagged_images(app_env, "product", 1)
    at = app_env.open()
    assert not panel(at).proto.expanded and not panel(at).warning
    #                      in the project, in this push, after the push
    assert counts(panel(at).table[0]) == {"empty-shelf": (0, 0, 0), "person": (0, 0, 0), "product": (1, 0, 1)}

    chosen = [n for n in tile_names(at) if n not in demo.bad.values()][:3]
    tick(at, *chosen)
    at.multiselect(key="push_tags").set_value(["person"]).run()
    assert counts(panel(at).table[0])["person"] == (0, 3, 3)
    assert not panel(at).warning  # 3:1 is within the default 10:1

    button(at, "Push selected").click().run()
    assert at.success[0].value == "**Push:** 3 pushed"
    assert counts(panel(at).table[0])["person"] == (3, 0, 3)  # counted again after the push

    tick(at, chosen[0])  # one frame already in the project, picked again: counted in this push
    panel(at).toggle(key="balance_by_version").set_value(True).run()
    pushed = {version_label(app_env.curator.blob(n)) for n in chosen}
    by_version = counts(panel(at).table[1])
    assert set(by_version) == {("person", version) for version in pushed} | {("product", "? ?")}
    assert sum(by_version["person", v][0] for v in pushed) == 3  # the project's, by the provenance the push wrote
    assert by_version["product", "? ?"] == (1, 0, 1)  # an image from elsewhere: no provenance
    assert by_version["person", version_label(app_env.curator.blob(chosen[0]))][1] == 1


def test_choosing_a_tag_that_makes_the_imbalance_worse_past_the_setting_warns(app_env_factory, demo):
    harness = app_env_factory(percept_max_class_imbalance="2")
    add_tagged_images(harness, "product", 1)
    at = harness.open()
    tick(at, *[n for n in tile_names(at) if n not in demo.bad.values()][:3])

    at.multiselect(key="push_tags").set_value(["person"]).run()  # person 3 against product 1: 3:1
    assert panel(at).proto.expanded
    [warning] = panel(at).warning
    assert unescape(warning.value) == (
        "This push would leave tag 'person' with 3 images against 1 of tag 'product': 3:1, past the 2:1 the "
        "setting percept_max_class_imbalance allows (it is 1:1 now). A model trained on it learns to favour "
        "'person': push frames of 'product' first, or fewer frames with 'person'."
    )

    at.multiselect(key="push_tags").set_value(["person", "product"]).run()  # 3 against 4: better balanced
    assert not panel(at).warning and not panel(at).proto.expanded
