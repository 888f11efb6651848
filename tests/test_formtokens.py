"""CSRF tokens of the portal's and console's forms (http.formtokens): bound to one session, or to
one browser's form cookie, sealed with the shared sealing keys, refused when old or altered."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from forwardauth.http import formtokens
from forwardauth.http.common import BadInput
from forwardauth.sealing import Sealer


@pytest.fixture
def services(tmp_path: Path) -> Any:
    return SimpleNamespace(sealer=Sealer(tmp_path / "sealing").load())


def test_a_token_opens_for_its_session_only(services: Any) -> None:
    token = formtokens.make(services, formtokens.session_binding("sid-a"))
    assert formtokens.valid(services, formtokens.session_binding("sid-a"), token)
    assert not formtokens.valid(services, formtokens.session_binding("sid-b"), token)
    assert not formtokens.valid(services, "anonymous:sid-a", token)


def test_an_old_or_future_token_is_refused(services: Any) -> None:
    binding = formtokens.session_binding("sid")
    token = formtokens.make(services, binding, now=1_000_000)
    assert formtokens.valid(services, binding, token, now=1_000_000 + formtokens.MAX_AGE)
    assert not formtokens.valid(services, binding, token, now=1_000_000 + formtokens.MAX_AGE + 1)
    assert not formtokens.valid(services, binding, token, now=1_000_000 - 3600)


@pytest.mark.parametrize("token", ["", "x", "!!!!", "a" * 500, "AAAA", "\x00"])
def test_garbage_is_refused_without_raising(services: Any, token: str) -> None:
    assert not formtokens.valid(services, "session:sid", token)


def test_an_altered_token_is_refused(services: Any) -> None:
    token = formtokens.make(services, "session:sid")
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert not formtokens.valid(services, "session:sid", flipped)


def test_another_installation_s_token_is_refused(services: Any, tmp_path: Path) -> None:
    other = SimpleNamespace(sealer=Sealer(tmp_path / "other").load())
    assert not formtokens.valid(services, "session:sid", formtokens.make(other, "session:sid"))


def test_a_rotated_key_still_opens_forms_made_before(services: Any, tmp_path: Path) -> None:
    from forwardauth import sealing

    token = formtokens.make(services, "session:sid")
    sealing._write_key(tmp_path / "sealing")
    assert formtokens.valid(services, "session:sid", token)


def test_check_answers_403(services: Any) -> None:
    with pytest.raises(BadInput) as refused:
        formtokens.check(services, "session:sid", {"csrf_token": "nope"})
    assert refused.value.status == 403
    formtokens.check(services, "session:sid", {"csrf_token": formtokens.make(services, "session:sid")})
