"""Executed notebooks hold decrypted previews: none is committed with outputs, and Jupyter's checkpoints
(copies of executed notebooks) are never picked up by git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nbformat
import pytest

from .test_notebooks import output_problems

REPO = Path(__file__).resolve().parents[2]


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_every_notebook_in_the_repository_is_committed_without_outputs():
    tracked = [p for p in git("ls-files", "-z", "--", "*.ipynb").stdout.split("\0") if p]
    assert tracked, "git lists no notebook: the notebooks/ folder moved?"
    problems = {
        path: found
        for path in tracked
        if (REPO / path).exists() and (found := output_problems(nbformat.read(REPO / path, as_version=4)))
    }
    assert problems == {}, "clear the outputs before committing: they hold decrypted frames"


@pytest.mark.parametrize(
    "path",
    [
        "notebooks/.ipynb_checkpoints/01_explore_retraining_data-checkpoint.ipynb",
        ".ipynb_checkpoints/scratch-checkpoint.ipynb",
        "deploy/azure-functions/.ipynb_checkpoints/try-checkpoint.ipynb",
    ],
)
def test_notebook_checkpoints_are_ignored_by_git(path):
    ignored = git("check-ignore", "--no-index", "--quiet", path)
    assert ignored.returncode == 0, f"{path} is not git-ignored: a checkpoint holds an executed notebook's previews"


def test_no_checkpoint_is_committed():
    assert [p for p in git("ls-files").stdout.splitlines() if ".ipynb_checkpoints" in p] == []
