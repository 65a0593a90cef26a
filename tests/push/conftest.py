from __future__ import annotations

import itertools

import pytest

from percept_core import Curator

_containers = itertools.count()


@pytest.fixture
def project_id(stack):
    """A fresh multilabel classification project with two tags."""
    return stack.new_project("push tests", tags=("person", "product"))


@pytest.fixture
def make_curator(stack, tmp_path):
    """Curator on the test stack, a fresh project by default and a ledger of this test's own."""

    def make(project: str, **overrides) -> Curator:
        overrides.setdefault("percept_ledger_path", str(tmp_path / "ledger.sqlite"))
        return Curator(stack.settings(custom_vision_project_id=project, **overrides), actor="tester")

    return make


@pytest.fixture
def container_name():
    """A container name no other test uses."""
    return f"push{next(_containers)}x"
