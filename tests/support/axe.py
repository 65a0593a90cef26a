"""axe-core (Deque's accessibility engine, the npm package pinned in devstack/package.json) run in a Playwright
page: the WCAG 2 A and AA rules (2.0 and 2.1), each violation named by its rule and the elements it found."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Frame, Page

AXE_SCRIPT = Path(__file__).resolve().parents[2] / "devstack" / "node_modules" / "axe-core" / "axe.min.js"
# The success criteria of WCAG 2.0 and 2.1 at levels A and AA, by axe-core's tags for them.
WCAG_AA_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")


@dataclass(frozen=True)
class Violation:
    """A rule broken on the page: its id (e.g. `image-alt`), how bad, and each offending element's selector
    with axe-core's account of what is wrong with it."""

    rule: str
    impact: str
    help: str
    elements: tuple[str, ...]

    def __str__(self) -> str:
        shown = "\n".join(f"    {element}" for element in self.elements[:8])
        more = f"\n    ... and {len(self.elements) - 8} more" if len(self.elements) > 8 else ""
        return f"{self.rule} ({self.impact}): {self.help}, on {len(self.elements)} element(s):\n{shown}{more}"


def wcag_violations(page: Page | Frame, *, include: str | None = None) -> list[Violation]:
    """The page's WCAG 2 A/AA violations as axe-core finds them now (within `include`, a CSS selector, if
    given: a dialog, say). Injects axe-core into the page the first time."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE_SCRIPT))
    results = page.evaluate(
        """async ([include, tags]) => {
            const context = include ? {include: [include]} : document;
            const options = {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']};
            const results = await window.axe.run(context, options);
            return results.violations.map((v) => ({
                rule: v.id, impact: v.impact || '', help: v.help,
                elements: v.nodes.map((n) => `${n.target.join(' ')}: ${n.failureSummary.replace(/\\s+/g, ' ')}`),
            }));
        }""",
        [include, list(WCAG_AA_TAGS)],
    )
    return [Violation(r["rule"], r["impact"], r["help"], tuple(r["elements"])) for r in results]


def assert_accessible(page: Page, where: str, *, include: str | None = None) -> None:
    """Fail with every violation, named by rule and element, when axe-core finds any on the page (or `include`)."""
    violations = wcag_violations(page, include=include)
    assert not violations, f"WCAG 2 A/AA violations on {where}:\n" + "\n".join(str(v) for v in violations)
