"""Screenshots of our pages at desktop and phone width, kept as CI artifacts (issue 16).

Saved to ``artifacts/screenshots/<name>-desktop.png`` and ``<name>-phone.png`` under the
repository root (the folder is in .gitignore; the README names it). Each width also checks
that the page fits: no horizontal scrolling of the whole document (wide tables scroll inside
their own box).
"""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, ViewportSize

FOLDER = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
WIDTHS = {"desktop": ViewportSize(width=1280, height=800), "phone": ViewportSize(width=390, height=844)}
# The elements that stick out of the viewport while their parent does not: what makes it scroll.
STICKING_OUT = """width => [...document.querySelectorAll("body, body *")]
  .filter(e => e.getBoundingClientRect().right > width && e.parentElement.getBoundingClientRect().right <= width)
  .map(e => e.outerHTML.slice(0, 120) + " right=" + Math.round(e.getBoundingClientRect().right))"""


def save(page: Page, name: str) -> list[Path]:
    """The page at each width as a full-page PNG; the viewport is put back afterwards."""
    FOLDER.mkdir(parents=True, exist_ok=True)
    before = page.viewport_size
    saved = []
    try:
        for kind, size in WIDTHS.items():
            page.set_viewport_size(size)
            scroll_width = page.evaluate("() => document.documentElement.scrollWidth")
            if scroll_width > size["width"]:
                culprits = "\n".join(page.evaluate(STICKING_OUT, size["width"]))
                raise AssertionError(f"{name} scrolls sideways at {kind} width ({scroll_width}px):\n{culprits}")
            path = FOLDER / f"{name}-{kind}.png"
            page.screenshot(path=path, full_page=True)
            assert path.stat().st_size > 0
            saved.append(path)
    finally:
        if before is not None:
            page.set_viewport_size(before)
    return saved
