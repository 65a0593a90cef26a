"""What the pages say about what happened: errors, progress bars, an action's summary.

Not a page. Outside text (blob names, reasons, messages) is escaped (`md`) or shown in tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from pages._session import Session
from pages._text import md
from percept_core import CuratorError
from percept_core.pipeline import PushProgress


def show_error(title: str, exc: BaseException) -> None:
    hint = getattr(exc, "hint", None)
    message = getattr(exc, "message", None) or str(exc)  # may quote a blob's name or metadata: text, not Markdown
    st.error(f"**{title}.** {md(message)}" + (f"  \n{hint}" if hint else ""), icon=":material/error:")


@contextmanager
def action_errors(doing: str) -> Iterator[None]:
    """An action that a service refuses says so on the page (what did not happen, and what to do)."""
    try:
        yield
    except CuratorError as exc:
        show_error(f"{doing} stopped", exc)


def push_progress_bar(label: str, total: int) -> Callable[[PushProgress], None]:
    bar = st.progress(0.0, text=f"{label}: 0/{total}")

    def update(progress: PushProgress) -> None:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(progress.counts.items()))
        of = progress.total or total  # a push of bursts uploads fewer images than were picked
        fraction = min(1.0, progress.done / of) if of else 1.0
        bar.progress(fraction, text=f"{label}: {progress.done}/{of} · {counts}")

    return update


def count_progress_bar(label: str) -> Callable[[int, int], None]:
    bar = st.progress(0.0, text=label)

    def update(done: int, total: int) -> None:
        bar.progress(min(1.0, done / total) if total else 1.0, text=f"{label}: {done}/{total}")

    return update


@dataclass(frozen=True)
class LastResult:
    """An action's summary and the items worth a word, kept for the page's next run (the action reruns it)."""

    title: str
    counts: dict[str, int]
    rows: list[tuple[str, str, str]]
    failed: bool


def remember_result(title: str, counts: dict[str, int], rows: Sequence[tuple[str, str, str]], *, failed: bool) -> None:
    Session().last_result = LastResult(title, counts, list(rows), failed)


def show_last_result() -> None:
    result = Session().last_result
    if not result:
        return
    summary = ", ".join(f"{n} {outcome}" for outcome, n in result.counts.items()) or "nothing to do"
    (st.warning if result.failed else st.success)(f"**{result.title}:** {summary}", icon=":material/task_alt:")
    if result.rows:
        table = pd.DataFrame(result.rows, columns=["blob", "outcome", "reason"])
        st.dataframe(table, hide_index=True, width="stretch")
