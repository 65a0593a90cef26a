"""One rulebook: which action may happen to a blob in which state, and the Curator (notebooks, the Function)
keeping to it as the app and the CLI do."""

from __future__ import annotations

import ast
import itertools
import json
import re
from pathlib import Path

import pytest

from percept_core.ledger import BlobRecord, PushState, Review
from percept_core.review import STATES
from percept_core.state import CANNOT_DECRYPT, Action, ActionRefused, BlobState, allowed, refusal, state_of_record
from tests.support.frames import jpeg, upload_frames

KEY = ("data", "42-2026-11-20-09-00-00.jpg.dec", "0x8D0001")


def test_every_state_the_ledger_gives_is_a_blob_state_with_the_same_word():
    seen = set()
    for review, push_state in itertools.product(list(Review), [None, *PushState]):
        record = BlobRecord(KEY, review=review, push_state=push_state)
        state = state_of_record(record)
        assert state.value == record.state  # the ledger's and the UI's words stay as they are
        seen.add(state)
    assert seen == set(BlobState) and state_of_record(None) is BlobState.NEW


def test_the_gallery_filters_on_the_same_words_as_before():
    assert STATES == ("new", "pushed", "failed", "rejected", "cannot decrypt", "near_duplicate", "pushing")
    assert BlobState.of("cannot decrypt") is BlobState.UNDECRYPTABLE  # Curator.state_of's label


@pytest.mark.parametrize(
    ("action", "state", "expected"),
    [
        (Action.REJECT, BlobState.NEW, None),
        (Action.REJECT, BlobState.FAILED, None),
        (Action.REJECT, BlobState.UNDECRYPTABLE, None),
        (Action.REJECT, BlobState.NEAR_DUPLICATE, None),
        (Action.REJECT, BlobState.REJECTED, None),
        (Action.REJECT, BlobState.PUSHED, "already in the Custom Vision project: it cannot be rejected"),
        (Action.RESTORE, BlobState.REJECTED, None),
        (Action.RESTORE, BlobState.NEAR_DUPLICATE, None),
        (Action.RESTORE, BlobState.UNDECRYPTABLE, None),
        (Action.RESTORE, BlobState.NEW, "not rejected: nothing to restore"),
        (Action.RESTORE, BlobState.PUSHED, "already in the Custom Vision project"),
        (Action.PUSH, BlobState.NEW, None),
        (Action.PUSH, BlobState.FAILED, None),
        (Action.PUSH, BlobState.REJECTED, "rejected: restore it first"),
        (Action.PUSH, BlobState.PUSHED, "already in the Custom Vision project"),
        (Action.RETAG, BlobState.PUSHED, None),
        (Action.RETAG, BlobState.NEW, "not pushed yet: push it instead"),
        (Action.SET_REGIONS, BlobState.PUSHED, None),
        (Action.SET_REGIONS, BlobState.NEW, None),
        (Action.SET_REGIONS, BlobState.REJECTED, "rejected: restore it first"),
        (Action.MARK_NEAR_DUPLICATE, BlobState.NEW, None),
        (Action.MARK_NEAR_DUPLICATE, "cannot decrypt", "already cannot decrypt"),
        (Action.MARK_NEAR_DUPLICATE, BlobState.PUSHED, "already pushed"),
    ],
)
def test_each_refusal_says_why_in_the_users_words(action, state, expected):
    why = refusal(action, state)
    if expected is None:
        assert why is None and allowed(action, state)
    else:
        assert why is not None and why.startswith(expected) and not allowed(action, state)


def test_the_rules_accept_the_words_the_ledger_stores():
    assert refusal("reject", "pushed") == refusal(Action.REJECT, BlobState.PUSHED)
    with pytest.raises(ValueError):
        allowed("reject", "archived")  # a state nobody defined is an error, never silently allowed


def test_a_notebook_cannot_reject_an_image_in_the_project_and_nothing_changes(
    stack, project_id, make_curator, container_name
):
    upload_frames(stack, container_name, [jpeg(i) for i in range(700, 703)])
    curator = make_curator(project_id, mm_telemetry_storage_container=container_name)
    blobs = sorted(curator.blobs(), key=lambda b: b.name)
    curator.push(blobs[:1])

    with pytest.raises(ActionRefused) as refused:
        curator.reject(blobs[:2], reason="blurred")
    assert refused.value.refused == {
        blobs[0].name: "already in the Custom Vision project: it cannot be rejected (delete it there first)"
    }
    assert blobs[0].name in str(refused.value) and "Nothing was changed" in str(refused.value)
    records = curator.records(blobs)
    assert [state_of_record(records.get(b.key)) for b in blobs] == [BlobState.PUSHED, BlobState.NEW, BlobState.NEW]
    assert curator.ledger.events(action="reject") == []

    assert curator.reject(blobs[1:2]) == 1
    with pytest.raises(ActionRefused, match="not rejected: nothing to restore"):
        curator.restore(blobs[1:3])
    assert curator.records(blobs[1:2])[blobs[1].key].state == "rejected"  # the refused call changed nothing
    assert curator.restore(blobs[1:2]) == 1
    assert curator.push_all_untagged().counts == {"pushed": 2}


# -- no state word outside state.py -------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
STATE_WORDS = frozenset({*(state.value for state in BlobState), CANNOT_DECRYPT})
QUOTED_STATE_WORD = re.compile(r"(['\"])(" + "|".join(re.escape(word) for word in STATE_WORDS) + r")\1")


def _sources() -> list[Path]:
    found = [*ROOT.glob("percept_core/**/*.py"), *ROOT.glob("pages/**/*.py"), *ROOT.glob("views/**/*.py")]
    found += [ROOT / "app.py"]
    found += [*ROOT.glob("deploy/**/*.py"), *ROOT.glob("notebooks/*.py")]
    return sorted(path for path in found if path.is_file())


def state_literals(source: str) -> list[int]:
    """Lines of `source` with a string that is a state's word, or quotes one (as SQL does); docstrings aside."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    # Words that only share a state's spelling: the members of other enums (a push's outcomes, Custom Vision's
    # answer per image) and the field names of a report's JSON.
    other_words = {
        id(statement.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and any(_names_enum(base) for base in node.bases)
        for statement in node.body
        if isinstance(statement, ast.Assign)
    }
    other_words |= {id(key) for node in ast.walk(tree) if isinstance(node, ast.Dict) for key in node.keys if key}
    return sorted(
        {
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings | other_words
            and (node.value in STATE_WORDS or QUOTED_STATE_WORD.search(node.value))
        }
    )


def _names_enum(base: ast.expr) -> bool:
    name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else ""
    return name.endswith("Enum")


def test_the_scan_finds_a_state_word_in_code_and_in_sql_but_not_in_docstrings():
    source = '''"""A module whose docstring may say "pushed"."""
state = "pushed"
SQL = "SELECT name FROM pushes WHERE state='failed'"
label = f"{state} 'cannot decrypt' {SQL}"
fine = ("pushes", "newest", "Failed", "rejected by Custom Vision")
class Outcome(StrEnum):
    FAILED = "failed"
report = {"rejected": 1}
counts[Outcome.FAILED] = report["rejected"]
'''
    assert state_literals(source) == [2, 3, 4, 9]


def test_no_state_is_spelled_out_of_state_py():
    where = []
    for path in _sources():
        relative = path.relative_to(ROOT).as_posix()
        if relative == "percept_core/state.py":
            continue
        where += [f"{relative}:{line}" for line in state_literals(path.read_text(encoding="utf-8"))]
    for path in sorted(ROOT.glob("notebooks/*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for number, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                code = "".join(cell["source"])
                code = "\n".join("" if line.startswith(("%", "!")) else line for line in code.splitlines())
                where += [f"{path.relative_to(ROOT).as_posix()} cell {number}:{line}" for line in state_literals(code)]
    assert where == [], "state words outside percept_core/state.py (use BlobState, Review, PushState): " + ", ".join(
        where
    )
