"""Per-worker caches: pure behaviour, then revocation across live workers."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import jwt
import redis

from forwardauth.constants import RedisKeys
from forwardauth.core.cache import ClaimsCache, LiveTokens, Memo
from forwardauth.core.tokens import AccessClaims, Identity
from forwardauth.stores import users

from .support import PASSWORD, REDIS_URL, Service, wait_until


def claims(expires_at: int, sid: str = "s", jti: str = "j") -> AccessClaims:
    return AccessClaims(identity=Identity("u", "user"), jti=jti, sid=sid, expires_at=expires_at)


def test_memo_is_bounded_oldest_out() -> None:
    memo: Memo[str] = Memo(max_entries=2)
    assert memo.remember("a", "A") == "A" and memo.get("a") == "A"
    memo.remember("b", "B")
    memo.remember("c", "C")
    assert memo.get("a") is None and memo.get("b") == "B" and memo.get("c") == "C" and len(memo) == 2


def test_claims_cache_expires_and_evicts() -> None:
    cache = ClaimsCache(leeway=5, max_entries=2)
    cache.put("a", claims(100))
    assert cache.get("a", now=104) == claims(100)
    assert cache.get("a", now=105) is None and len(cache) == 0  # expired (with leeway): dropped
    cache.put("a", claims(1000))
    cache.put("b", claims(1000))
    cache.put("c", claims(1000))
    assert cache.get("a", 0) is None and cache.get("c", 0) is not None and len(cache) == 2
    cache.clear()
    assert len(cache) == 0


def test_live_tokens_only_answer_while_subscribed() -> None:
    live = LiveTokens()
    live.remember("s", "j", 100, live.epoch)
    assert not live.is_live("s", "j", 0) and len(live) == 0  # not subscribed: nothing kept
    live.reset(subscribed=True)
    live.remember("s", "j", 100, live.epoch)
    assert live.is_live("s", "j", 50) and not live.is_live("s", "j", 100)
    live.reset(subscribed=False)  # feed lost: memory wiped
    assert not live.is_live("s", "j", 50) and len(live) == 0


def test_a_revocation_during_the_redis_read_is_not_remembered() -> None:
    live = LiveTokens()
    live.reset(subscribed=True)
    epoch = live.epoch  # the handler starts its Redis read...
    live.forget("s", "j")  # ...the revocation arrives meanwhile...
    live.remember("s", "j", 100, epoch)  # ...and the stale "live" answer is not kept
    assert not live.is_live("s", "j", 0)


def test_forget_one_token_or_a_session_and_prune() -> None:
    live = LiveTokens(max_entries=3)
    live.reset(subscribed=True)
    for jti in ("a", "b"):
        live.remember("s1", jti, 100, live.epoch)
    live.remember("s2", "c", 10, live.epoch)
    live.remember("s3", "d", 100, live.epoch)  # over the bound: not kept
    assert len(live) == 3 and not live.is_live("s3", "d", 0)
    live.forget("s1", "a")
    assert not live.is_live("s1", "a", 0) and live.is_live("s1", "b", 0)
    live.forget("s1")
    assert not live.is_live("s1", "b", 0) and len(live) == 1
    live.prune(now=50)
    assert len(live) == 0


# --- live workers --------------------------------------------------------------------------------


def login(base: str, user: users.User) -> str:
    return str(
        httpx.post(base + "/login", json={"username": user.username, "password": PASSWORD}).json()["access_token"]
    )


def statuses(base: str, token: str, n: int = 12) -> set[int]:
    """/auth's answers over ``n`` new connections, so that every worker answers some."""
    return {httpx.get(base + "/auth", headers={"Authorization": f"Bearer {token}"}).status_code for _ in range(n)}


def test_revocation_reaches_every_worker(service: Callable[..., Service], make_user: Callable[..., users.User]) -> None:
    svc = service(workers=2)
    user = make_user()
    token = login(svc.base, user)
    assert statuses(svc.base, token) == {200}  # now remembered by the workers
    httpx.post(svc.base + "/logout", headers={"Authorization": f"Bearer {token}"})
    wait_until(lambda: statuses(svc.base, token) == {401}, timeout=2, what="every worker to refuse")


def test_a_lost_feed_falls_back_to_redis(
    service: Callable[..., Service], make_user: Callable[..., users.User], env: dict[str, str]
) -> None:
    svc = service(workers=1)
    token = login(svc.base, make_user())
    assert statuses(svc.base, token) == {200}
    client = redis.Redis.from_url(REDIS_URL)
    # Cut the worker's subscription, then revoke behind its back (no message is published).
    client.client_kill_filter(_type="pubsub")
    payload = jwt.decode(token, options={"verify_signature": False})
    client.delete(RedisKeys(env["FORWARDAUTH_REDIS_PREFIX"]).access_token(payload["sid"], payload["jti"]))
    wait_until(lambda: statuses(svc.base, token) == {401}, timeout=10, what="the fall-back to Redis")
    log = svc.log.read_text()
    assert "revocation feed reconnected" in log or "revocation feed lost" in log
    client.close()
