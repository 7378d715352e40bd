"""The console's one stylesheet parses as a whole: an unclosed block (a merge can leave
one) silently drops every rule after it in the browser."""

from __future__ import annotations

from importlib import resources


def test_every_block_of_the_stylesheet_is_closed() -> None:
    css = resources.files("pooler.admin_ui").joinpath("static", "console.css").read_text()
    depth = 0
    for line_number, line in enumerate(css.splitlines(), 1):
        depth += line.count("{") - line.count("}")
        assert depth >= 0, f"a '}}' closes nothing at line {line_number}"
        if not line.startswith((" ", "\t", "}")) and line.strip() and depth > 1:
            raise AssertionError(f"a rule at line {line_number} opens inside an unclosed block")
    assert depth == 0, "a block of console.css is never closed"
