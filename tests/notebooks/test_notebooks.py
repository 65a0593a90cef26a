"""Both notebooks run top to bottom against the devstack, and compute what the container and the project hold."""

from __future__ import annotations

import ast
import sys

import nbformat
import pytest

from devstack.seed import plan_frames
from percept_core import Curator, Ledger
from percept_core.config import _SPECS
from percept_core.quality import QualityFlag
from tests.support.trained import train, upload_training_images

from .conftest import NOTEBOOKS, execute_notebook, kernel_environment

EXPLORE = NOTEBOOKS / "01_explore_retraining_data.ipynb"
CURATE = NOTEBOOKS / "02_curate_and_push.ipynb"
SECRET_SETTINGS = {name for attr, spec in _SPECS.items() if spec.secret for name in (attr, spec.key)}
TRAINED_PHOTOS = ("chelsea", "hubble_deep_field", "immunohistochemistry")  # the demo's most frequent photos


def secrets_of(stack) -> list[str]:
    return stack.settings().secret_values()


def project_trained_on_demo_photos(stack, demo) -> tuple[str, dict[str, str]]:
    """A project trained on the demo's unspoiled frames of TRAINED_PHOTOS, each tagged with its photo's name:
    its id, and the tag of each frame it was trained on, by blob name."""
    project_id = stack.new_project("explore")
    tag_of = {
        spec.device_name + ".dec": spec.photo
        for spec in plan_frames(demo.frames)
        if spec.photo in TRAINED_PHOTOS and spec.degradation is None
    }
    curator = Curator(stack.settings())
    blob_named = {blob.name: blob for blob in curator.blobs()}
    for photo in TRAINED_PHOTOS:
        tag = stack.trainer().create_tag(project_id, photo)
        frames = [curator.decrypt(blob_named[name]) for name, tagged in tag_of.items() if tagged == photo]
        upload_training_images(stack, project_id, frames, tag_ids=[tag.id])
    train(stack, project_id)
    return project_id, tag_of


def test_explore_lists_plots_shows_thumbnails_finds_bursts_flags_and_suggests(stack, demo, tmp_path):
    project_id, trained_tag_of = project_trained_on_demo_photos(stack, demo)
    ledger_path = tmp_path / "ledger" / "ledger.sqlite"
    env = kernel_environment(stack, percept_ledger_path=str(ledger_path))
    run = execute_notebook(EXPLORE, env=env, cwd=tmp_path / "work", parameters={"custom_vision_project_id": project_id})
    summary = run.summary

    assert run.kernel_python == sys.executable  # the kernel is this virtual environment's Python
    listed = list(Curator(stack.settings()).blobs())
    assert summary["blobs"] == len(listed) == demo.frames + len(demo.bad)
    assert sum(summary["model_versions"].values()) == len(listed)
    # the grid shows the least confident frames
    lowest = sorted(b.confidence for b in listed)[:12]
    by_name = {b.name: b for b in listed}
    assert sorted(by_name[n].confidence for n in summary["least_confident"]) == lowest
    # bursts: every burst the demo devices produced, and no frame outside one
    planned = plan_frames(demo.frames)
    burst_sizes = [sum(1 for s in planned if s.burst == first) for first in {s.burst for s in planned if s.burst}]
    assert summary["bursts"] == demo.bursts == len(burst_sizes)
    assert summary["near_duplicates"] == sum(size - 1 for size in burst_sizes)
    # the five bad blobs are named, with the state the ledger now gives them
    assert sorted(summary["cannot_decrypt"]) == sorted(demo.bad.values())
    assert summary["states"] == {"new": demo.frames, "cannot decrypt": len(demo.bad)}
    # quality flags: exactly the frames the demo spoiled, each with the flag it was spoiled to earn
    assert summary["flagged"] == {name: flag.label for name, flag in demo.degraded.items()}
    spoiled = list(demo.degraded.values())
    assert summary["flag_counts"] == {flag.value: spoiled.count(flag) for flag in QualityFlag}
    # suggestions from the trained model: one for every frame that decrypts, its own tag for a trained frame
    suggested = summary["suggested"]
    assert set(suggested) == set(by_name) - set(demo.bad.values())
    assert {name: suggested[name] for name in trained_tag_of} == trained_tag_of
    # the plots and thumbnails were displayed, from memory: the notebook wrote no file of its own
    assert run.images("plots") == 1 and run.images("grid") == 1 and run.images("burst-strip") == 1
    assert run.images("quality-grid") == 1
    assert list((tmp_path / "work").iterdir()) == []
    assert not any(secret in run.text() for secret in secrets_of(stack))
    # the hashes are remembered, so the next look decrypts nothing
    records = Ledger(ledger_path).records([b.key for b in listed])
    assert sum(1 for r in records.values() if r.phash) == demo.frames


def test_explore_says_why_there_are_no_suggestions_before_the_project_is_trained(stack, demo, tmp_path):
    project_id = stack.new_project("untrained")
    env = kernel_environment(stack, percept_ledger_path=str(tmp_path / "ledger.sqlite"))
    run = execute_notebook(EXPLORE, env=env, cwd=tmp_path / "work", parameters={"custom_vision_project_id": project_id})
    assert run.summary["suggested"] is None
    output = "".join(o.get("text", "") for o in run.cell("suggestions").outputs)
    assert output == (
        f"No suggestions: Custom Vision project {project_id} has no trained iteration to suggest tags with. "
        "Train the project first (push tagged images, then Train).\n"
    )


def test_curate_tags_pushes_the_rest_untagged_and_trains(stack, demo, tmp_path):
    project_id = stack.new_project("curate", tags=("person",))
    env = kernel_environment(stack, percept_ledger_path=str(tmp_path / "ledger.sqlite"))
    # the project comes in as a parameter, as papermill passes it against real Azure
    parameters = {"custom_vision_project_id": project_id, "export_container": "notebook-automl"}
    run = execute_notebook(CURATE, env=env, cwd=tmp_path / "work", parameters=parameters)
    summary = run.summary
    client = stack.trainer()

    tagged = client.get_tagged_image_count(project_id)
    untagged = client.get_untagged_image_count(project_id)
    assert (summary["project_tagged"], summary["project_untagged"]) == (tagged, untagged)
    outcomes = summary["outcomes"]
    tagged_pushes = {label: counts for label, counts in outcomes.items() if label.startswith("tagged")}
    assert (
        tagged == sum(counts.get("pushed", 0) for counts in tagged_pushes.values()) == sum(summary["selected"].values())
    )
    assert untagged == outcomes["untagged"]["pushed"]
    assert outcomes["untagged"]["undecryptable"] == len(demo.bad)
    # every good frame is in the project, except the near-duplicates of bursts
    assert summary["near_duplicates_recorded"] > 0
    assert tagged + untagged + summary["near_duplicates_recorded"] == demo.frames
    # both tags exist (one was created) with enough images, and training completed
    tags = {t.name: t.image_count for t in client.get_tags(project_id)}
    assert tags == summary["tags"] and set(tags) == {"person", "empty-shelf"}
    assert all(count >= 5 for count in tags.values())
    assert summary["training"] == "Completed"
    # the tagged frames went to the container for Azure ML, with their tags: the project's tagged images
    assert summary["exported"]["frames"] == tagged
    assert summary["exported"]["per_tag"] == {tag: count for tag, count in tags.items() if count}
    assert [i.status for i in client.get_iterations(project_id)] == ["Completed"]
    # each push showed a progress bar that reached its end
    text = run.text()
    for label, counts in tagged_pushes.items():
        done = sum(counts.values())
        assert f"{label}: 100%" in text and f"{done}/{done}" in text
    assert "untagged: 100%" in text
    assert not any(secret in text for secret in secrets_of(stack))
    assert list((tmp_path / "work").iterdir()) == []


def test_curate_explains_when_the_project_cannot_train(stack, demo, tmp_path):
    """Too few tagged frames: the notebook says why training did not start instead of failing."""
    project_id = stack.new_project("too few")
    env = kernel_environment(stack, percept_ledger_path=str(tmp_path / "ledger.sqlite"))
    run = execute_notebook(
        CURATE,
        env=env,
        cwd=tmp_path / "work",
        parameters={
            "custom_vision_project_id": project_id,
            "tag_queries": {"person": "model == 'people-counter' and confidence < 12"},
            "push_rest_untagged": False,
        },
    )
    assert run.summary["training"] is None
    assert run.summary["project_untagged"] == 0 and run.summary["project_tagged"] > 0
    assert [tag for tag, count in run.summary["tags"].items() if count] == ["person"]  # one tag: too few
    text = run.text()
    assert "Training did not start" in text and "Tag more frames (widen tag_queries)" in text
    assert stack.trainer().get_iterations(project_id) == []


# -- the committed notebooks ------------------------------------------------------------------------


def output_problems(notebook) -> list[str]:
    """What makes a notebook unfit to commit: outputs or execution counts (decrypted thumbnails live there)."""
    problems = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {index} has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {index} has an execution count")
    if "widgets" in notebook.metadata:
        problems.append("the notebook stores widget state")
    return problems


COMMITTED = sorted(NOTEBOOKS.glob("*.ipynb"))


def test_both_notebooks_are_there():
    assert {p.name for p in COMMITTED} >= {EXPLORE.name, CURATE.name}


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_notebook_has_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert output_problems(notebook) == [], f"clear the outputs of {path.name} before committing"


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_parameters_come_first_and_hold_no_secret(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assigned = {
        target.id: node.value
        for node in ast.parse(code[0].source).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert "custom_vision_project_id" in assigned
    assert not assigned.keys() & SECRET_SETTINGS
    settings = {name for name in assigned if name in {a for a in _SPECS} | {s.key for s in _SPECS.values()}}
    assert all(isinstance(assigned[n], ast.Constant) and assigned[n].value is None for n in settings)
    for cell in code:  # and no cell reads a secret setting by name
        assert not any(name in cell.source for name in SECRET_SETTINGS if len(name) > 12)


def test_the_output_check_fails_on_an_executed_notebook():
    notebook = nbformat.read(EXPLORE, as_version=4)
    cell = next(c for c in notebook.cells if c.cell_type == "code")
    cell.execution_count = 3
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo="})]
    assert output_problems(notebook) == ["cell 1 has outputs", "cell 1 has an execution count"]
