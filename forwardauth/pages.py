"""HTML pages (the login form), rendered from templates read once at import.

Every value put into a page is HTML-escaped here; templates hold no logic.
"""

from __future__ import annotations

import html
from importlib import resources
from string import Template

_LOGIN = Template(resources.files(__package__).joinpath("templates/login.html").read_text("utf-8"))


def login_page(action: str, rd: str = "", username: str = "", error: str | None = None) -> str:
    return _LOGIN.substitute(
        action=html.escape(action),
        rd=html.escape(rd),
        username=html.escape(username),
        error=f'<p class="error" role="alert">{html.escape(error)}</p>' if error else "",
    )
