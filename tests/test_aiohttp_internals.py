"""The private aiohttp names forwardauth relies on, listed, so an aiohttp upgrade fails here loudly.

http/limits.py times a request's head on the connection and builds its own server, and
http/hotpath.py gives /auth the match info the router would have (aiohttp has no public hook for
any of these). Every private name they use is in USED; a new one in the code, or one gone from
aiohttp, fails a test here rather than a connection in production.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from aiohttp import web

from forwardauth.http import hotpath, limits

# (aiohttp class, private attribute) the module reads, calls or overrides.
USED = {
    (web.AppRunner, "_make_server"),  # Runner overrides it to return limits.Server
    (web.Server, "_kwargs"),  # the handler options Server passes on to each Connection
    (web.Server, "_loop"),
    (web.RequestHandler, "_loop"),
    (web.RequestHandler, "_request_count"),  # grows when a request head is complete
    (web.RequestHandler, "_waiter"),  # set while the handler waits for more bytes
    (web.RequestHandler, "_force_close"),
    (web.Request, "_match_info"),  # hotpath sets it, as the application does after resolving
}
OWN = {"_head_clock", "_head_deadline", "_head_due", "_head_timer"}  # limits.Connection's own


def defined(cls: type, name: str) -> bool:
    """On the class (a method, a slot), or assigned in aiohttp's source of it or its bases."""
    for klass in cls.__mro__:
        if name in vars(klass) or name in getattr(klass, "__slots__", ()):
            return True
        if klass.__module__.startswith("aiohttp") and re.search(rf"self\.{name}\b", inspect.getsource(klass)):
            return True
    return False


def test_every_private_name_used_still_exists_in_aiohttp() -> None:
    missing = [f"{cls.__name__}.{name}" for cls, name in sorted(USED, key=str) if not defined(cls, name)]
    assert missing == []


def test_the_module_uses_no_private_name_that_is_not_listed() -> None:
    source = Path(limits.__file__).read_text() + Path(hotpath.__file__).read_text()
    used = set(re.findall(r"\.(_[a-z][a-z_]*)\b", source))
    assert used - OWN == {name for _, name in USED}


def test_the_check_finds_a_name_aiohttp_does_not_have() -> None:
    assert not defined(web.RequestHandler, "_no_such_attribute")
