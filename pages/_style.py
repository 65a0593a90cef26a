"""The app's look where Streamlit's theme cannot reach it, for WCAG 2.1 AA: captions in a colour that meets the
4.5:1 contrast of text (Streamlit draws them in the body colour at 60% opacity, 3.8:1 on white), a focus
outline on every control a keyboard reaches (1.4.11: 3:1 against the page), table cells that wrap a long value
instead of scrolling it (a scrolling cell is a region the keyboard cannot reach), and names for the annotator's
two drop-downs (streamlit-image-annotation shows "Mode" and "Class" beside them but does not tie them to them:
a screen reader announced "combo box" and nothing else).

Not a page. Every run draws it first, the sign-in page's included (`_entry.run`).
"""

from __future__ import annotations

import streamlit as st

# #55534f on white is 7.7:1, on the sidebar's #f8f8f7 7.2:1; the focus blue #0f6cbd (the theme's primary
# colour) is 5.4:1 on white.
CAPTION_COLOUR = "#55534f"
FOCUS_COLOUR = "#0f6cbd"

_CSS = f"""<style>
  [data-testid="stCaptionContainer"] {{ opacity: 1; color: {CAPTION_COLOUR}; }}
  [data-testid="stCaptionContainer"] code {{ color: inherit; }}
  [data-testid="stTable"] td [data-testid="stMarkdownContainer"] {{ overflow: visible; overflow-wrap: anywhere; }}
  button:focus-visible, a:focus-visible, input:focus-visible, textarea:focus-visible,
  [role="checkbox"]:focus-visible, [role="radio"]:focus-visible, [role="switch"]:focus-visible,
  [role="combobox"]:focus-visible, [tabindex]:focus-visible {{
    outline: 3px solid {FOCUS_COLOUR} !important; outline-offset: 2px;
  }}
</style>"""

# The annotator is a component in an iframe of this origin: each of its unnamed drop-downs gets the text of the
# label drawn just before it, whenever the component draws them (anew on every box chosen).
_NAMES_JS = """<script>
(() => {
  const doc = window.parent.document;
  const win = doc.defaultView;
  if (win.__perceptControlNames) return;
  win.__perceptControlNames = true;
  const name = (frameDoc) => {
    for (const select of frameDoc.querySelectorAll('select:not([aria-label])')) {
      const label = select.parentElement && select.parentElement.previousElementSibling;
      if (label && label.textContent.trim()) select.setAttribute('aria-label', label.textContent.trim());
    }
  };
  const watch = (frame) => {
    const frameDoc = frame.contentDocument;  // null for another origin: nothing of ours to name there
    if (!frameDoc || frameDoc.__perceptNamed) return;
    frameDoc.__perceptNamed = true;
    name(frameDoc);
    new win.MutationObserver(() => name(frameDoc)).observe(frameDoc, {childList: true, subtree: true});
  };
  const scan = () => doc.querySelectorAll('iframe').forEach((frame) => {
    watch(frame);
    frame.addEventListener('load', () => watch(frame));
  });
  scan();
  new win.MutationObserver(scan).observe(doc.body, {childList: true, subtree: true});
})();
</script>"""


def apply() -> None:
    """Draw the app's style rules (no element of their own on the page)."""
    st.html(_CSS)
    st.html(_NAMES_JS, unsafe_allow_javascript=True)
