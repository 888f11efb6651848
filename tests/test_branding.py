"""Branding of the pages: site name, logo (and the CSP that lets exactly it in), accent colour,
and the site the login page names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from forwardauth import config
from forwardauth.http import pages
from forwardauth.http.app import create_app

from .support import AppServer


def render_with(settings: config.Settings, render: Any) -> str:
    token = pages.BRANDING.set(settings)
    try:
        return str(render())
    finally:
        pages.BRANDING.reset(token)


def csp_of(settings: config.Settings) -> dict[str, str]:
    policy = pages.page_headers(settings)["Content-Security-Policy"]
    return {d.split(" ", 1)[0]: d.split(" ", 1)[1] for d in (part.strip() for part in policy.split(";"))}


def test_defaults() -> None:
    settings = config.load({})
    assert settings.site_name == "forwardauth" and not settings.logo_url and not settings.accent_color
    page = pages.login_page("/login")
    assert '<div class="brand"><span>forwardauth</span></div>' in page
    assert "<img" not in page and "--accent" not in page
    assert "img-src" not in csp_of(settings)  # no logo: no images at all (default-src 'none')


def test_site_name_and_logo_url() -> None:
    settings = config.load(
        {"FORWARDAUTH_SITE_NAME": 'Acme "Ops" <Portal>', "FORWARDAUTH_LOGO_URL": "https://cdn.acme.test/logo.svg"}
    )
    page = render_with(settings, lambda: pages.login_page("/login"))
    assert '<img src="https://cdn.acme.test/logo.svg" alt="Acme &#34;Ops&#34; &lt;Portal&gt;">' in page
    csp = csp_of(settings)
    assert csp["img-src"] == "https://cdn.acme.test"  # exactly the logo's origin
    assert csp["default-src"] == "'none'" and csp["style-src"] == "'unsafe-inline'"


def test_logo_path_is_self() -> None:
    settings = config.load({"FORWARDAUTH_LOGO_URL": "/branding/logo.png"})
    assert csp_of(settings)["img-src"] == "'self'"
    assert '<img src="/branding/logo.png" alt="forwardauth">' in render_with(settings, lambda: pages.login_page("/"))


@pytest.mark.parametrize(
    "value",
    ["http://cdn.acme.test/logo.png", "//cdn.acme.test/logo.png", "javascript:alert(1)", "logo.png", "https://"],
)
def test_bad_logo_url_names_the_variable(value: str) -> None:
    with pytest.raises(config.ConfigError, match=r"^FORWARDAUTH_LOGO_URL: "):
        config.load({"FORWARDAUTH_LOGO_URL": value})


def test_accent_colour() -> None:
    settings = config.load({"FORWARDAUTH_ACCENT_COLOR": "#0a7F3c"})
    page = render_with(settings, lambda: pages.login_page("/login"))
    assert ":root { --accent: #0a7F3c; }" in page
    assert "<script>" not in page  # the colour is CSS only; the page CSP still allows its inline <style>
    assert csp_of(settings)["style-src"] == "'unsafe-inline'"
    assert config.load({"FORWARDAUTH_ACCENT_COLOR": "#abc"}).accent_color == "#abc"


@pytest.mark.parametrize("value", ["red;} body{", "red", "#12", "#1234", "#ggg", "#abcdef;", " #abc", "#abcdefa"])
def test_accent_colour_is_validated(value: str) -> None:
    with pytest.raises(config.ConfigError, match=r"^FORWARDAUTH_ACCENT_COLOR: must be a hex colour"):
        config.load({"FORWARDAUTH_ACCENT_COLOR": value})


def test_site_name_must_be_printable() -> None:
    with pytest.raises(config.ConfigError, match=r"^FORWARDAUTH_SITE_NAME: "):
        config.load({"FORWARDAUTH_SITE_NAME": "a\nb"})


def test_login_page_names_the_rd_host_escaped() -> None:
    page = pages.login_page("/login", rd="https://app.example.com:8443/path?x=1")
    assert "Sign in to continue to <strong>app.example.com:8443</strong>" in page
    assert "Sign in to continue" not in pages.login_page("/login", rd="/relative/path")
    assert "Sign in to continue" not in pages.login_page("/login")
    # a host that is no host (a browser would not take it) is never shown raw
    odd = pages.login_page("/login", rd='https://a"><script>x/')
    assert "<script>" not in odd


async def test_served_pages_carry_the_branding(aiohttp_client: Any, env: Mapping[str, str]) -> None:
    settings = config.load(
        {
            **env,
            "FORWARDAUTH_SITE_NAME": "Acme <SSO>",
            "FORWARDAUTH_LOGO_URL": "https://cdn.acme.test/logo.svg",
            "FORWARDAUTH_ACCENT_COLOR": "#123456",
        }
    )
    client = await aiohttp_client(AppServer(create_app(settings)))
    response = await client.get("/login", params={"rd": "https://app.example.test/x"})
    assert response.status == 200
    page = await response.text()
    assert 'alt="Acme &lt;SSO&gt;"' in page and "--accent: #123456;" in page
    assert "Sign in to continue to <strong>app.example.test</strong>" in page
    assert "img-src https://cdn.acme.test;" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("accent", "text"), [("#0a5c36", "#fff"), ("#ffcc00", "#000"), ("#fff", "#000"), ("#000", "#fff")]
)
def test_button_text_reads_on_the_accent(accent: str, text: str) -> None:
    """White on a light accent (or black on a dark one) would fail WCAG contrast: the other is chosen."""
    from forwardauth.http.pages import text_on

    assert text_on(accent) == text
