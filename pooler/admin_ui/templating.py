"""The console's templates: one Jinja2 environment, rendered synchronously.

Quart's `render_template` renders through an async-enabled environment, which costs
about twice the CPU of a plain one (every block, loop and macro call becomes a coroutine)
for templates that never await. Pages render here instead: autoescaped, compiled once,
never reloaded from disk. A template sees its context, plus `request` (the current
request, for its path and query); Quart's other template globals (`url_for`, `session`,
`g`, `config`) are not provided: pass what a template needs in its context, or register a
global on `ENVIRONMENT` (the console package registers `new_form_once`).
"""

from __future__ import annotations

from typing import Any, Final

import jinja2

from pooler.web.quart_http import current_request

ENVIRONMENT: Final = jinja2.Environment(
    loader=jinja2.PackageLoader("pooler.admin_ui", "templates"),
    autoescape=True,
    auto_reload=False,
    cache_size=-1,
)


def render_page(name: str, **context: Any) -> str:
    """The template `name` (under templates/) rendered with `context` and `request`."""
    return ENVIRONMENT.get_template(name).render(request=current_request(), **context)
