"""Background pushes: the process-wide runs of Push all untagged, and this session's push of its selection.

Not a page. Streamlit stops a script run as soon as the reviewer clicks or presses anything, which would cut
a push short in the middle and say nothing: a push runs in a thread of its own, and a later run reports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import streamlit as st

from pages import _auth
from pages._results import push_progress_bar
from pages._session import Session
from percept_core import RetrainingBlob
from percept_core.jobs import PushJobs
from percept_core.pipeline import BackgroundPush, PushProgress
from percept_core.review import ReviewPush

PROGRESS_SECONDS = 0.2  # how often a run waiting for a push redraws its progress bar


def cancel_button(job: BackgroundPush, cancelling: str) -> None:
    """Cancel for a running background job, and once pressed what the run still finishes (`cancelling`)."""
    cancelled = job.cancel_token.cancelled
    st.button("Cancel", on_click=_auth.guarded(job.cancel), icon=":material/cancel:", disabled=cancelled)
    if cancelled:
        st.caption(cancelling)


@st.cache_resource(show_spinner=False)
def push_jobs() -> PushJobs:
    """The process-wide registry of background pushes: a run outlives the tab that started it."""
    return PushJobs()


@dataclass
class SessionPush:
    """A push of the reviewer's selection: what it took, and the thread pushing it."""

    items: list[RetrainingBlob]
    job: BackgroundPush[ReviewPush]

    def result(self) -> ReviewPush:
        """What the push did; raises what stopped it."""
        if self.job.error is not None:
            raise self.job.error
        assert self.job.report is not None
        return self.job.report


def session_pushing(session: Session) -> bool:
    """This session has a push going (or over and not yet reported)."""
    return session.session_push is not None


def start_session_push(
    session: Session,
    items: Sequence[RetrainingBlob],
    push: Callable[[Callable[[PushProgress], None]], ReviewPush],
    *,
    actor: str,
) -> None:
    """Push in a thread of its own; whichever run comes next waits for it and reports it (`finished_session_push`)."""
    job = BackgroundPush(lambda progress, _cancel: push(progress), description="Push selected", actor=actor)
    session.session_push = SessionPush(list(items), job.start())


def finished_session_push(session: Session, label: str) -> SessionPush | None:
    """This session's push once it is over, handed out once (None when there is none). Until then the run
    waits here behind a progress bar; a run stopped meanwhile leaves the waiting to the next one."""
    pushed = session.session_push
    if pushed is None:
        return None
    update = push_progress_bar(label, len(pushed.items))
    while not pushed.job.wait(PROGRESS_SECONDS):
        if pushed.job.progress is not None:
            update(pushed.job.progress)
    session.session_push = None
    return pushed
