"""The review filters (model, version, confidence, capture dates, state, name), their order, and paging through
what matches.

Not a page. Everything filters on blob metadata and the ledger, never on decrypted content.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import streamlit as st

from pages import _auth
from pages._session import Session
from percept_core import Curator, RetrainingBlob
from percept_core.blobs import BlobFilter
from percept_core.queue import ReviewOrder
from percept_core.review import STATES, Pager, ReviewQuery

PAGE_SIZE = 48
MODELS_KEY = "f_models"
VERSIONS_KEY = "f_versions"
CONFIDENCE_KEY = "f_confidence"
DATES_KEY = "f_dates"
STATES_KEY = "f_states"
NAME_KEY = "f_name"
ORDER_KEY = "f_order"


def review_filters(session: Session, curator: Curator) -> ReviewQuery:
    """Model, version, confidence, capture dates, state and name: all on metadata and the ledger; and the order."""
    seen = session.seen_models | set(curator.ledger.known_models())
    names = sorted({name for name, _ in seen if name})
    versions = sorted({version for _, version in seen if version})
    c = st.columns([3, 2, 3, 3, 3, 3, 3])
    model_names = c[0].multiselect("Model", names, key=MODELS_KEY, accept_new_options=True, placeholder="Any")
    model_versions = c[1].multiselect("Version", versions, key=VERSIONS_KEY, accept_new_options=True, placeholder="Any")
    low, high = c[2].slider("Confidence (%)", 0, 100, (0, 100), key=CONFIDENCE_KEY)
    dates = c[3].date_input("Captured between", value=(), key=DATES_KEY, format="YYYY-MM-DD")
    states = c[4].multiselect("State", STATES, key=STATES_KEY, placeholder="Any")
    name = c[5].text_input("Name contains", key=NAME_KEY, placeholder="e.g. 2026-11-15")
    order = c[6].selectbox(
        "Order",
        tuple(ReviewOrder),
        format_func=lambda o: o.label,
        key=ORDER_KEY,
        help="Least sure first: the frames the device and the current model are least sure of, spread over model "
        "versions, days and bursts (lists every match once; predicts nothing)",
    )
    dates = tuple(dates) if isinstance(dates, tuple | list) else (dates,) if isinstance(dates, date) else ()
    return ReviewQuery(
        BlobFilter(
            model_names=tuple(model_names),
            model_versions=tuple(model_versions),
            min_confidence=float(low) if low > 0 else None,
            max_confidence=float(high) if high < 100 else None,
            captured_from=dates[0] if dates else None,
            captured_to=dates[1] if len(dates) > 1 else None,
            name_contains=name.strip(),
        ),
        tuple(states),
        order,
    )


def pager(session: Session, query: ReviewQuery, project_id: str) -> Pager:
    """This session's pager; a new query (or another project: states differ) starts again at page 1."""
    return session.pager(query, project_id, page_size=PAGE_SIZE)


def remember_models(session: Session, blobs: Iterable[RetrainingBlob]) -> None:
    """The models of the blobs listed: the filters offer them from now on."""
    session.seen_models = session.seen_models | {(b.model_name, b.model_version) for b in blobs if b.model_name}


def pager_button_keys(where: str) -> tuple[str, str]:
    """The keys of the Previous and Next buttons of the pager controls drawn `where` ("top", "bottom")."""
    return f"{where}_prev", f"{where}_next"


def matching_count(curator: Curator, query: ReviewQuery) -> int | None:
    """How many blobs the filters match, when the blob index can say at once (not with a state filter)."""
    return None if query.states else curator.count(query.blob_filter)


def pager_controls(pager: Pager, shown: int, *, where: str, matching: int | None = None) -> None:
    previous_key, next_key = pager_button_keys(where)
    left, middle, right = st.columns([1, 4, 1], vertical_alignment="center")
    left.button("Previous", key=previous_key, disabled=not pager.has_previous, on_click=_auth.guarded(pager.previous))
    more = "more after it" if pager.has_next else "the last page"
    of = f" of {matching:,} matching" if matching is not None else ""
    middle.markdown(f"Page {pager.number} · {shown} blobs{of} · {more}")
    right.button("Next", key=next_key, disabled=not pager.has_next, on_click=_auth.guarded(pager.next))
