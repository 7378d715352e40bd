"""Whether every table of a page shows all its columns in the box it is drawn in.

A table wider than its box is cut at the box's right edge when an ancestor clips it
(`overflow-x: hidden` or `clip`), and in practice too when that ancestor scrolls
(`overflow-x: auto`): on a phone a scroll box shows no scrollbar until it is swiped
(Playwright's headless Chromium hides them too), so nothing tells the user there are more
columns. The console's answer at phone width is the stacked card layout (`.table.stack`:
one card per row, each cell labelled), so here a table must fit its box, scrollable or not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page, ViewportSize

# For each visible table: each ancestor whose overflow-x is not `visible` (it clips or
# scrolls) and whose inner box ends left of the table's right edge; and a table whose own
# content is wider than itself.
# A table is named by its caption, else the heading of its section, else its classes.
CUT_TABLES = """() => {
  const name = table => {
    const caption = table.querySelector('caption');
    if (caption && caption.textContent.trim()) return caption.textContent.trim();
    const section = table.closest('section');
    const heading = section && section.querySelector('h2, h3');
    if (heading) return heading.textContent.trim();
    return 'table.' + [...table.classList].join('.');
  };
  const box = element => element.id ? '#' + element.id
    : element.tagName.toLowerCase() + [...element.classList].map(c => '.' + c).join('');
  const found = [];
  for (const table of document.querySelectorAll('table')) {
    if (!table.getClientRects().length) continue;  // hidden (display: none)
    const rect = table.getBoundingClientRect();
    if (table.scrollWidth > table.clientWidth + 1) {
      found.push(`${name(table)}: its content is ${table.scrollWidth} px wide` +
        ` in ${table.clientWidth} px`);
    }
    for (let a = table.parentElement; a && a !== document.body; a = a.parentElement) {
      const overflow = getComputedStyle(a).overflowX;
      if (overflow === 'visible') continue;
      const inner = a.getBoundingClientRect().left + a.clientLeft + a.clientWidth;
      if (rect.right > inner + 1) {
        found.push(`${name(table)}: ${Math.round(rect.width)} px wide, ` +
          `${Math.round(inner - rect.left)} px shown by ${box(a)} (overflow-x: ${overflow})`);
      }
    }
  }
  return found;
}"""


def cut_tables(page: Page, size: ViewportSize) -> list[str]:
    """The tables of `page`, at window `size`, that are wider than the box showing them
    (an empty list when every column is in view); the window is left at `size`."""
    page.set_viewport_size(size)
    found: list[str] = page.evaluate(CUT_TABLES)
    return found
