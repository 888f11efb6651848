"""``forwardauth serve`` and ``forwardauth demo``: long-running commands that Ctrl-C ends cleanly.

Ctrl-C is how a terminal user stops them, not a failure: they stop their children, print no
traceback and exit 0 (so ``make run`` ends without make's ``Error``).
"""

from __future__ import annotations

import argparse
import contextlib

from forwardauth.clisupport import demo_user
from forwardauth.config import Settings
from forwardauth.ports import PortInUse, probe


class DemoError(Exception):
    """Reported like the CLI's other errors: one line, exit status 1."""


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    from forwardauth.server import serve  # imported here: the other commands need no event loop

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C during start-up: what started is stopped by now
        serve(settings)


def cmd_demo(settings: Settings, args: argparse.Namespace) -> None:
    from forwardauth.dev.demo import PROXIES, default_proxy, run_stack

    proxy = args.proxy or default_proxy()
    if proxy not in PROXIES:
        raise DemoError(f"--proxy must be one of {', '.join(PROXIES)}")
    port = args.port or 8080
    try:
        probe("127.0.0.1", port)
    except PortInUse:
        raise DemoError(
            f"port {port} is already in use (another `make run`?): stop it, or choose another "
            "port with forwardauth demo --port P"
        ) from None
    try:
        greeting = demo_user(settings)
        run_stack(port, proxy, settings.data_dir.resolve() / "demo", greeting)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:  # a process of the stack did not start or died
        raise DemoError(f"demo stopped: {exc}") from None
