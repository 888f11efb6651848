"""Placeholder: filled in by the admin work (issue 16)."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    """Register the admin pages."""
