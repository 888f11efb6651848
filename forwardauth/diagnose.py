"""What is wrong with a configuration, said with the variable to change and how.

Shared by ``serve`` (warnings at start, errors that stop it at once instead of retrying) and
``forwardauth config`` / ``config check``. The known variable names are derived from
``config.VARIABLES``, so a variable added there is known here without another list to keep.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from forwardauth import config, configparse
from forwardauth.config import PREFIX, ConfigError, Settings, Variable

# FORWARDAUTH_* names that are not settings, and who reads them.
OTHER_VARIABLES = {
    "FORWARDAUTH_DEMO_PASSWORD": "`forwardauth user demo` and `forwardauth demo`",
    "FORWARDAUTH_ADDR": "the deploy/ templates' placeholder, for envsubst",
    "FORWARDAUTH_DOCTOR_TOKEN": "`forwardauth doctor` (an access token for its signed-in checks)",
    "FORWARDAUTH_TEST_POSTGRES": "the test suite",
    "FORWARDAUTH_TEST_REDIS": "the test suite",
    "FORWARDAUTH_TEST_STORES": "the test suite (embedded: its own embedded stores)",
}
FILE_SUFFIX = "_FILE"
MASK = "****"


def known_names() -> set[str]:
    """Every FORWARDAUTH_* name forwardauth reads: the settings, secrets' ``_FILE`` forms, the others."""
    names = {var.env for var in config.VARIABLES}
    names |= {var.env + FILE_SUFFIX for var in config.VARIABLES if var.secret}
    return names | set(OTHER_VARIABLES)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One message per FORWARDAUTH_* variable forwardauth does not read (a typo is silently ignored)."""
    known = known_names()
    messages = []
    for name in sorted(environ):
        if not name.upper().startswith(PREFIX) or name in known:
            continue
        if name.upper() in known:
            hint = f" (did you mean {name.upper()}? names are upper case)"
        else:
            close = difflib.get_close_matches(name.upper(), sorted(known), n=1, cutoff=0.8)
            hint = f" (did you mean {close[0]}?)" if close else ""
        messages.append(f"{name}: unknown variable, ignored{hint}")
    return messages


# --- values in effect, secrets masked ------------------------------------------------------------


def mask_url(text: str) -> str:
    """The URL with its password (in the authority or a ``password=`` parameter) replaced by ****."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hosts}" if colon else (f"{user}@{hosts}" if user else f"{MASK}@{hosts}")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if "pass" in k.lower() else v) for k, v in pairs], safe="*/:")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def shown(var: Variable, value: Any) -> str:
    """A setting's value as ``forwardauth config`` prints it: like its input, secrets masked."""
    if value is None:
        return var.default
    if var.secret:
        return mask_url(value) if isinstance(value, str) and "://" in value else MASK
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    if var.parse is configparse.parse_duration:
        return f"{value}s"
    return str(value)


def source(var: Variable, environ: Mapping[str, str]) -> str:
    if var.secret and environ.get(var.env + FILE_SUFFIX):
        return f"from {var.env}{FILE_SUFFIX}"
    return "set" if environ.get(var.env) else "default"


def values_in_effect(settings: Settings, environ: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(variable, value, where it came from) for every setting."""
    derived = {"keys_dir": settings.key_directory}  # a default that depends on another variable
    rows = []
    for var in config.VARIABLES:
        value = getattr(settings, var.name, None)
        rows.append((var.env, shown(var, derived.get(var.name) if value is None else value), source(var, environ)))
    return rows


# --- errors that must stop the start at once, with the fix ---------------------------------------


def _server(dsn: str) -> str:
    try:
        parts = urlsplit(dsn)
        return f"{parts.hostname or 'the local socket'}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "the server"


def database_problem(exc: BaseException, dsn: str) -> ConfigError | None:
    """A connection error that no retry will cure (no such database, user or password), else None."""
    text = str(exc)
    variable = f"{PREFIX}DATABASE_URL"
    where = _server(dsn)
    if found := re.search(r'database "([^"]*)" does not exist', text):
        name = found.group(1)
        return ConfigError(
            f'{variable}: database "{name}" does not exist on {where}: create it '
            f'(createdb {name}, or CREATE DATABASE "{name}") or correct the name in the URL'
        )
    if found := re.search(r'role "([^"]*)" does not exist', text):
        return ConfigError(
            f'{variable}: PostgreSQL user "{found.group(1)}" does not exist on {where}: '
            "create it or correct the user in the URL"
        )
    if found := re.search(r'password authentication failed for user "([^"]*)"', text):
        return ConfigError(
            f'{variable}: PostgreSQL on {where} refused the password of user "{found.group(1)}": '
            "correct the password in the URL"
        )
    if "no pg_hba.conf entry" in text:
        return ConfigError(
            f"{variable}: PostgreSQL on {where} does not let this host in (no pg_hba.conf entry): allow it there"
        )
    return None


def keys_problem(settings: Settings, exc: BaseException) -> ConfigError:
    """The keys folder cannot be used: name the variable, the folder and the way out."""
    if f"{PREFIX}KEYS_DIR" in str(exc):  # keys.py's own refusals name it already
        return ConfigError(str(exc))
    directory = settings.key_directory
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        reason = f"{reason}: {exc.filename}"
    default = "" if settings.keys_dir is not None else f" (unset: {PREFIX}DATA_DIR/keys)"
    return ConfigError(
        f"{PREFIX}KEYS_DIR{default}: cannot use {directory} ({reason}): let the user running "
        "forwardauth read it (and write it, to create the first key), or point the variable "
        "at another folder"
    )


def is_inside(path: str | bytes | None, folder: Path) -> bool:
    if path is None:
        return False
    try:
        return Path(str(path)).resolve().is_relative_to(folder.resolve())
    except (OSError, ValueError):
        return False
