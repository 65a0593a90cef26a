"""The gallery: tiles of thumbnails with their facts and state, a checkbox each for the selection, and the way
to a frame's larger view; a burst of near-duplicates is one tile.

Not a page. Thumbnails come from the session's `PreviewCache` (bounded); nothing decrypted is kept here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import streamlit as st

from pages import _auth, _quality, _suggest
from pages._session import Selection, Session
from pages._text import md
from percept_core import Curator, CuratorError, RetrainingBlob
from percept_core.bursts import Burst
from percept_core.ledger import BlobRecord
from percept_core.review import STATES
from percept_core.state import BlobState
from percept_core.suggestions import Suggestion

TILE_COLUMNS = 6  # medium tiles, and the strip of a burst's frames in the larger view
# Tiles a row for each tile size: about 110, 160 and 250 px wide thumbnails in a 1440 px wide window.
TILE_SIZES = {"Small": 8, "Medium": TILE_COLUMNS, "Large": 4}
TILE_SIZE_KEY = "tile_size"

STATE_COLOURS = {
    BlobState.NEW: "blue",
    BlobState.PUSHED: "green",
    BlobState.FAILED: "red",
    BlobState.PUSHING: "yellow",
    BlobState.REJECTED: "gray",
    BlobState.UNDECRYPTABLE: "orange",
    BlobState.NEAR_DUPLICATE: "violet",
}


def tile_columns() -> int:
    """Tiles a row at the tile size this session chose (medium until it chooses)."""
    return TILE_SIZES.get(st.session_state.get(TILE_SIZE_KEY) or "Medium", TILE_COLUMNS)


def tile_size_control(session: Session) -> None:
    """Small, medium or large tiles, remembered for the session (every page of the app, every page of tiles)."""
    session.kept(TILE_SIZE_KEY, "Medium")
    st.segmented_control(
        "Tile size",
        list(TILE_SIZES),
        key=TILE_SIZE_KEY,
        on_change=_auth.guarded(session.keep),
        args=(TILE_SIZE_KEY,),
        help="Larger tiles show more of each frame; each thumbnail also opens full screen from its corner",
    )


def tile_key(name: str) -> str:
    """The key of a blob's tile (its container: the keyboard shortcuts find tiles by it)."""
    return f"tile:{name}"


def open_key(name: str) -> str:
    """The key of a tile's "Larger view" button."""
    return f"open:{name}"


def _pick_key(name: str, generation: int) -> str:
    return f"pick:{generation}:{name}"


# -- near-duplicate bursts ---------------------------------------------------------------------------


def remember_bursts(
    session: Session, blobs: Sequence[RetrainingBlob], bursts: Sequence[Burst], *, max_distance: int
) -> None:
    """The bursts of the pages seen (by representative name): what a later push of the selection groups by."""
    shown = {b.key for b in blobs}
    known = {
        name: burst
        for name, burst in session.bursts(max_distance).items()
        if not any(member.key in shown for member in burst.members)
    }
    known |= {burst.representative.name: burst for burst in bursts}
    session.keep_bursts(known, max_distance)


# -- tiles -------------------------------------------------------------------------------------------


def tile_caption(blob: RetrainingBlob) -> str:
    captured = f"{blob.captured_at:%Y-%m-%d %H:%M:%S}" if blob.captured_at else "capture time unknown"
    confidence = f"{blob.confidence:g}%" if blob.confidence is not None else "confidence ?"
    model = f"{blob.model_name or '?'} {blob.model_version or '?'}"
    return f"{captured} · {confidence} · {md(model)}"


def tile_alt(
    blob: RetrainingBlob,
    state: BlobState,
    *,
    frames: int = 1,
    suggested: str | None = None,
    flags: Sequence[str] = (),
) -> str:
    """The text alternative of a tile's thumbnail: what a screen reader says of the frame (plain text, not
    Markdown: the browser sets it as an attribute, where nothing is interpreted)."""
    facts = [
        f"Frame {blob.name}",
        state.label,
        f"model {blob.model_name or 'unknown'} version {blob.model_version or 'unknown'}",
        f"device confidence {blob.confidence:g}%" if blob.confidence is not None else "device confidence unknown",
        f"captured {blob.captured_at:%Y-%m-%d %H:%M:%S}" if blob.captured_at else "capture time unknown",
    ]
    if frames > 1:
        facts.append(f"stands for {frames} near-identical frames")
    if flags:
        facts.append(f"flagged {' and '.join(flags).lower()}")
    if suggested:
        facts.append(f"the model suggests {suggested}")
    return ", ".join(facts)


def state_of(curator: Curator, blob: RetrainingBlob, record: BlobRecord | None) -> BlobState:
    return BlobState.of(curator.state_of(blob, record))


def gallery(
    session: Session,
    curator: Curator,
    items: Sequence[RetrainingBlob | Burst],
    records: dict[tuple[str, str, str], BlobRecord],
    thumbnails: dict[tuple[str, str, str], bytes | CuratorError],
    *,
    notes: dict[str, str] | None = None,
    suggestions: _suggest.PageSuggestions | None = None,
    flags: _quality.Flags | None = None,
) -> None:
    """Tiles of `tile_columns()` a row: thumbnail (or why there is none), facts, state, checkbox, larger view.

    A burst of near-duplicates is one tile, its representative's, with the number of frames it stands for;
    `notes` adds a line to a blob's tile (its boxes in progress, say); `suggestions` the model's suggestion for
    the frame, marked as one, with a button that accepts it; `flags` its quality flags, as badges.
    """
    picked = session.selection
    per_row = tile_columns()
    for row_start in range(0, len(items), per_row):
        columns = st.columns(per_row)
        for column, item in zip(columns, items[row_start : row_start + per_row], strict=False):
            blob = item.representative if isinstance(item, Burst) else item
            with column, st.container(border=True, key=tile_key(blob.name)):
                _tile(
                    curator,
                    item,
                    records,
                    thumbnails.get(blob.key),
                    picked,
                    (notes or {}).get(blob.name),
                    suggestions,
                    _quality.flag_labels((flags or {}).get(blob.key)),
                )


def _tile(
    curator: Curator,
    item: RetrainingBlob | Burst,
    records: dict[tuple[str, str, str], BlobRecord],
    thumbnail: bytes | CuratorError | None,
    picked: Selection,
    note: str | None,
    suggestions: _suggest.PageSuggestions | None,
    flags: Sequence[str],
) -> None:
    blob = item.representative if isinstance(item, Burst) else item
    members = item.members if isinstance(item, Burst) else (item,)
    state = state_of(curator, blob, records.get(blob.key))
    suggestion = suggestions.of(blob) if suggestions else None
    suggested = _suggest.describe(suggestion, suggestions.threshold) if suggestion and suggestions else None
    if isinstance(thumbnail, bytes):
        alt = tile_alt(blob, state, frames=len(members), suggested=suggested, flags=flags)
        st.image(thumbnail, width="stretch", alt=alt)
    else:
        st.error(f"**{md(getattr(thumbnail, 'reason', 'no preview'))}**", icon=":material/broken_image:")
        st.caption(md(getattr(thumbnail, "message", "")))
    st.badge(state.label, color=STATE_COLOURS.get(state, "gray"))
    for label in flags:
        st.badge(label, color="orange", icon=":material/warning:")
    st.caption(tile_caption(blob))
    if isinstance(item, Burst):
        states = Counter(state_of(curator, m, records.get(m.key)) for m in members)
        summary = ", ".join(f"{states[s]} {s.label}" for s in sorted(states, key=lambda s: STATES.index(s.label)))
        st.caption(f":material/burst_mode: **{len(item)} near-identical frames** ({summary})")
    if note:
        st.caption(note)  # the app's own words (see _annotate.tile_note): counts, no outside text
    if suggestions and suggestion and suggested:
        _suggestion(suggestions, blob, suggestion, suggested, state)
    for member in members:
        if member.name in picked.reasons:
            st.warning(md(picked.reasons[member.name]), icon=":material/report:")
    key = _pick_key(blob.name, picked.generation)
    st.session_state[key] = blob.name in picked
    # A label is Markdown: the name, escaped, shows as written (a name like `![x](http://...)` loads nothing).
    st.checkbox(md(blob.name), key=key, on_change=_auth.guarded(_toggle), args=(item, key, picked.generation))
    st.button(
        "Larger view",
        key=open_key(blob.name),
        type="tertiary",
        icon=":material/open_in_full:",
        on_click=_auth.guarded(_open),
        args=(blob.name,),
    )


def _suggestion(
    suggestions: _suggest.PageSuggestions,
    blob: RetrainingBlob,
    suggestion: Suggestion,
    suggested: str,
    state: BlobState,
) -> None:
    """The model's suggestion, marked as one (words and an icon, not a colour), until it is accepted; accepting is
    offered for a frame that is not in the project."""
    # Tag names are the project's, written by whoever can edit it: Markdown-escaped like every outside text.
    if suggestions.accepted(blob):
        st.caption(f":material/check_circle: **Accepted:** {md(suggested)}")
        return
    st.caption(f":material/auto_awesome: **Suggested:** {md(suggested)}")
    if state in (BlobState.NEW, BlobState.FAILED):
        st.button(
            "Accept suggestion",
            key=_suggest.accept_key(blob.name),
            type="tertiary",
            icon=":material/done:",
            on_click=_auth.guarded(_suggest.accept),
            args=(suggestions.project, [blob], suggestions.found, suggestions.threshold),
        )


def _toggle(item: RetrainingBlob | Burst, key: str, generation: int) -> None:
    """A tile's checkbox: a burst's tile picks (or drops) every frame of the burst. The checkbox of an earlier
    generation changes nothing: its tick is one the browser sent before it drew the tile anew."""
    picked = Session().selection
    if generation != picked.generation:
        return
    members = item.members if isinstance(item, Burst) else (item,)
    if st.session_state.get(key):
        picked.pick(members)
    else:
        for member in members:
            picked.discard(member.name)


def _open(name: str) -> None:
    Session().open_frame = name
