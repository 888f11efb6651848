"""Settings: typed, validated once, errors name the variable, secrets never shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forwardauth.config import ConfigError, load, parse_duration

SECRET = "s3cr3t-value-that-is-long-enough-0123456789"


def test_defaults() -> None:
    settings = load({})
    assert settings.embedded
    assert settings.port == 8080 and settings.host == "127.0.0.1"
    assert settings.access_ttl == 900 and settings.refresh_ttl == 14 * 86400
    assert settings.issuer == "http://127.0.0.1:8080"
    assert settings.login_url == "http://127.0.0.1:8080/login"
    assert settings.allowed_domains == ("127.0.0.1",)
    assert settings.cookie_secure is True
    assert settings.signing_alg == "RS256"
    assert settings.workers == (os.cpu_count() or 1)
    assert settings.key_directory == Path(".forwardauth") / "keys"


def test_values_are_parsed() -> None:
    settings = load({
        "FORWARDAUTH_PORT": "9000",
        "FORWARDAUTH_ACCESS_TTL": "5m",
        "FORWARDAUTH_REFRESH_TTL": "2d",
        "FORWARDAUTH_COOKIE_SECURE": "no",
        "FORWARDAUTH_COOKIE_DOMAIN": ".Example.com",
        "FORWARDAUTH_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1",
        "FORWARDAUTH_ISSUER": "https://auth.example.com/",
        "FORWARDAUTH_SIGNING_ALG": "eddsa",
        "FORWARDAUTH_DATABASE_URL": "postgresql://db/x",
        "FORWARDAUTH_REDIS_URL": "redis://cache:6379/1",
    })
    assert settings.port == 9000 and settings.access_ttl == 300 and settings.refresh_ttl == 172800
    assert settings.cookie_secure is False and settings.cookie_domain == "example.com"
    assert settings.allowed_domains == ("example.com",)
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "192.168.1.1/32"]
    assert settings.issuer == "https://auth.example.com"
    assert settings.login_url == "https://auth.example.com/login"
    assert settings.signing_alg == "EdDSA"
    assert not settings.embedded


@pytest.mark.parametrize(
    "variable,value",
    [
        ("FORWARDAUTH_PORT", "http"),
        ("FORWARDAUTH_PORT", "70000"),
        ("FORWARDAUTH_WORKERS", "0"),
        ("FORWARDAUTH_ACCESS_TTL", "soon"),
        ("FORWARDAUTH_COOKIE_SECURE", "maybe"),
        ("FORWARDAUTH_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("FORWARDAUTH_SIGNING_ALG", "none"),
        ("FORWARDAUTH_ISSUER", "ftp://x"),
        ("FORWARDAUTH_LOG_LEVEL", "loud"),
        ("FORWARDAUTH_ALLOWED_DOMAINS", "exa mple.com"),
        ("FORWARDAUTH_REDIS_URL", "memcached://x"),
    ],
)
def test_bad_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{variable}: "):
        load({variable: value})


@pytest.mark.parametrize("variable,value,message", [("FORWARDAUTH_PORT", "http", "'http' is not a TCP port"),
                                                    ("FORWARDAUTH_WORKERS", "two", "'two' is not a whole number")])
def test_bad_numbers_say_what_was_expected(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{variable}: {message}$"):
        load({variable: value})


def test_secrets_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        load({"FORWARDAUTH_DATABASE_URL": "mysql://user:" + SECRET + "@db/x"})
    assert SECRET not in str(caught.value)
    assert "FORWARDAUTH_DATABASE_URL" in str(caught.value)
    settings = load({"FORWARDAUTH_SIGNING_ALG": "HS256", "FORWARDAUTH_HMAC_SECRET": SECRET,
                     "FORWARDAUTH_DATABASE_URL": f"postgresql://u:{SECRET}@db/x"})
    assert SECRET not in repr(settings)


def test_hs256_needs_a_long_secret() -> None:
    with pytest.raises(ConfigError, match="FORWARDAUTH_HMAC_SECRET: required"):
        load({"FORWARDAUTH_SIGNING_ALG": "HS256"})
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        load({"FORWARDAUTH_SIGNING_ALG": "HS256", "FORWARDAUTH_HMAC_SECRET": "short"})


def test_secret_from_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    settings = load({"FORWARDAUTH_SIGNING_ALG": "HS256", "FORWARDAUTH_HMAC_SECRET_FILE": str(secret_file)})
    assert settings.hmac_secret == SECRET
    with pytest.raises(ConfigError, match="FORWARDAUTH_HMAC_SECRET_FILE: cannot read"):
        load({"FORWARDAUTH_HMAC_SECRET_FILE": str(tmp_path / "missing")})


def test_refresh_must_outlive_access() -> None:
    with pytest.raises(ConfigError, match="FORWARDAUTH_REFRESH_TTL"):
        load({"FORWARDAUTH_ACCESS_TTL": "1h", "FORWARDAUTH_REFRESH_TTL": "10m"})


@pytest.mark.parametrize("text,seconds", [("900", 900), ("15m", 900), ("2h", 7200), ("14d", 1209600),
                                          ("30s", 30), (" 5M ", 300)])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds
