"""Keyboard-first review: shortcuts for the gallery's buttons, moving between tiles, and the "?" list.

Not a page. `streamlit-shortcuts` (1.2.2) turns a key into a click on a Streamlit element with a key (a
button); that covers paging, select page, clear, push, reject and the "?" list. Its listener is a function
of the iframe that `add_shortcuts` renders and is installed once per browser tab: when that iframe is
rendered anew (a page of the app without it, or elements before it that come and go), the listener dies
with it and later iframes only update its map, so every shortcut stops working. Hence `install` runs at
the end of the sidebar, which every page renders the same way. What the library cannot do takes a few
lines of script of our own (`_TILES_JS`), because it only clicks one fixed element per shortcut:

- moving the focus between tiles (the set of tiles changes every page; the browser scrolls the focused
  tile into view), and acting on the focused tile (toggle its checkbox, open its larger view, accept its suggestion);
- leaving keys alone while the reviewer types in a field (its listener would swallow a typed "n" and
  page on) or while a dialog is open (the annotator, this list).
"""

from __future__ import annotations

import streamlit as st

from pages._filters import pager_button_keys

# (keys as shown, any of which does it; what it does), in the order of the "?" list.
SHORTCUTS = (
    (("j", "→"), "focus the next tile"),
    (("k", "←"), "focus the previous tile"),
    (("↓",), "focus the tile below"),
    (("↑",), "focus the tile above"),
    (("x", "Space"), "select or unselect the focused tile"),
    (("o", "Enter"), "open the focused tile's larger view (the annotator, for object detection)"),
    (("s",), "accept the focused tile's suggestion (with Suggest from the model on)"),
    (("Shift + S",), "accept the page's suggestions"),
    (("a",), "select the page"),
    (("Shift + A",), "clear the selection"),
    (("n",), "next page"),
    (("p",), "previous page"),
    (("u",), "push the selection"),
    (("d",), "reject the selection"),
    (("?",), "this list"),
    (("Esc",), "close a dialog"),
)

# The buttons the shortcuts click, drawn by the Review page with these keys.
SELECT_PAGE = "select_page"
CLEAR_SELECTION = "clear_selection"
PUSH_SELECTED = "push_selected"
REJECT_SELECTED = "reject_selected"
ACCEPT_PAGE = "accept_page_suggestions"
HELP_KEY = "keyboard_help"
_PREVIOUS_PAGE, _NEXT_PAGE = pager_button_keys("top")

# Button key -> the keys that click it (streamlit-shortcuts' notation).
BUTTONS = {
    _NEXT_PAGE: "n",
    _PREVIOUS_PAGE: "p",
    SELECT_PAGE: "a",
    CLEAR_SELECTION: "shift+a",
    PUSH_SELECTED: "u",
    REJECT_SELECTED: "d",
    ACCEPT_PAGE: "shift+s",
    HELP_KEY: ["shift+?", "?"],
}

_TILES_JS = """
<script>
(() => {
  const doc = window.parent.document;
  const win = doc.defaultView;
  win.__perceptTileColumns = %(columns)d;  // before the guard: the tile size may change, the listener stays
  if (win.__perceptTileKeys) return;
  win.__perceptTileKeys = true;
  const TILE = '[class*="st-key-tile-"]';
  const typing = (t) => !!t && (t.isContentEditable || ['TEXTAREA', 'SELECT'].includes(t.tagName)
    || (t.tagName === 'INPUT' && !['checkbox', 'radio', 'button', 'submit'].includes(t.type))
    || ['slider', 'combobox', 'listbox', 'spinbutton'].includes(t.getAttribute('role')));
  // Before any document-level shortcut sees the key: typing, or a dialog open, means it is not a shortcut.
  doc.body.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape' && (typing(e.target) || doc.querySelector('[role="dialog"]'))) e.stopPropagation();
  });
  const BOX = TILE + ' input[type="checkbox"]';
  const tileOf = (box) => [...box.closest(TILE).classList].find((c) => c.startsWith('st-key-tile-'));
  doc.addEventListener('focusin', (e) => {
    if (e.target.matches && e.target.matches(BOX)) win.__perceptLastTile = tileOf(e.target);
  });
  doc.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.altKey || e.metaKey || e.defaultPrevented) return;
    const boxes = [...doc.querySelectorAll(BOX)];
    const at = boxes.indexOf(doc.activeElement);
    const row = win.__perceptTileColumns;
    const step = {j: 1, ArrowRight: 1, k: -1, ArrowLeft: -1, ArrowDown: row, ArrowUp: -row}[e.key];
    if (step !== undefined && boxes.length) {
      e.preventDefault();
      // Focus lost (a dialog closed, the page reran): go on from the tile focused last, if it is on this page.
      const from = at >= 0 ? at : boxes.findIndex((b) => tileOf(b) === win.__perceptLastTile);
      const next = boxes[from < 0 ? 0 : Math.min(boxes.length - 1, Math.max(0, from + step))];
      next.focus();
      next.closest(TILE).scrollIntoView({block: 'nearest'});
    } else if (at >= 0 && e.key === 'x') {
      e.preventDefault();
      boxes[at].click();
    } else if (at >= 0 && (e.key === 'o' || e.key === 'Enter')) {
      e.preventDefault();
      boxes[at].closest(TILE).querySelector('[class*="st-key-open-"] button').click();
    } else if (at >= 0 && e.key === 's') {
      const accept = boxes[at].closest(TILE).querySelector('[class*="st-key-accept-"] button');
      if (accept) { e.preventDefault(); accept.click(); }
    }
  });
})();
</script>
<style>
  [class*="st-key-tile-"]:focus-within { outline: 3px solid #ff4b4b; outline-offset: 2px; }
</style>
"""


def install(*, columns: int) -> None:
    """The shortcuts, for a gallery of `columns` tiles a row. Call it at the same place on every run of every
    page (the sidebar): streamlit-shortcuts' listener lives in the iframe it renders, and dies with it."""
    from streamlit_shortcuts import add_shortcuts

    add_shortcuts(**BUTTONS)
    st.html(_TILES_JS % {"columns": columns}, unsafe_allow_javascript=True)


def help_button() -> bool:
    return st.button("Shortcuts", key=HELP_KEY, type="tertiary", icon=":material/keyboard:", help="Press ?")


@st.dialog("Keyboard shortcuts")
def help_dialog() -> None:
    rows = [f"| {' or '.join(f'`{key}`' for key in keys)} | {what} |" for keys, what in SHORTCUTS]
    st.markdown("\n".join(["| Keys | |", "| --- | --- |", *rows]))
    st.caption("Shortcuts rest while you type in a field. Space, Tab and Shift + Tab work as in any web page.")
