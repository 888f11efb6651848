"""Settings: typed, validated once, errors name the variable, secrets never shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forwardauth import config
from forwardauth.config import ConfigError, load
from forwardauth.configparse import parse_duration
from forwardauth.diagnose import mask_url, unknown_variables, values_in_effect

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
    settings = load(
        {
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
        }
    )
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


@pytest.mark.parametrize(
    "variable,value,message",
    [
        ("FORWARDAUTH_PORT", "http", "'http' is not a TCP port"),
        ("FORWARDAUTH_WORKERS", "two", "'two' is not a whole number"),
    ],
)
def test_bad_numbers_say_what_was_expected(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{variable}: {message}$"):
        load({variable: value})


def test_secrets_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        load({"FORWARDAUTH_DATABASE_URL": "mysql://user:" + SECRET + "@db/x"})
    assert SECRET not in str(caught.value)
    assert "FORWARDAUTH_DATABASE_URL" in str(caught.value)
    settings = load(
        {
            "FORWARDAUTH_SIGNING_ALG": "HS256",
            "FORWARDAUTH_HMAC_SECRET": SECRET,
            "FORWARDAUTH_DATABASE_URL": f"postgresql://u:{SECRET}@db/x",
        }
    )
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


@pytest.mark.parametrize(
    "text,seconds", [("900", 900), ("15m", 900), ("2h", 7200), ("14d", 1209600), ("30s", 30), (" 5M ", 300)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


# --- errors that say the fix; unknown variables; values shown with secrets masked ---------------


def test_another_database_kind_is_explained_without_its_url() -> None:
    with pytest.raises(ConfigError) as caught:
        load({"FORWARDAUTH_DATABASE_URL": f"mysql://root:{SECRET}@db/auth"})
    message = str(caught.value)
    assert message.startswith("FORWARDAUTH_DATABASE_URL: MySQL is not supported")
    assert "postgresql://USER:PASSWORD@HOST:5432/DATABASE" in message
    assert SECRET not in message and "root" not in message


@pytest.mark.parametrize(
    "variable,value,fix",
    [
        ("FORWARDAUTH_LOGIN_URL", "forwardauth/login", "a path needs a leading / (/forwardauth/login)"),
        ("FORWARDAUTH_ISSUER", "auth.example.com", "write it with its scheme, e.g. https://auth.example.com"),
        ("FORWARDAUTH_ISSUER", "https://", "has no host"),
    ],
)
def test_a_url_without_scheme_or_slash_says_how_to_write_it(variable: str, value: str, fix: str) -> None:
    with pytest.raises(ConfigError, match=f"^{variable}: ") as caught:
        load({variable: value})
    assert fix in str(caught.value)


def test_paths_and_urls_still_pass() -> None:
    settings = load({"FORWARDAUTH_LOGIN_URL": "/forwardauth/login", "FORWARDAUTH_ISSUER": "https://a.example.com"})
    assert settings.login_url == "/forwardauth/login" and settings.issuer == "https://a.example.com"
    assert load({"FORWARDAUTH_DATABASE_URL": "postgresql:///forwardauth"}).database_url == "postgresql:///forwardauth"


def test_unknown_variables_are_named_with_the_likely_one() -> None:
    found = unknown_variables(
        {
            "FORWARDAUTH_COOKIE_DOMIAN": "example.com",  # a typo
            "forwardauth_port": "9000",  # lower case: names are case-sensitive
            "FORWARDAUTH_SOMETHING_ELSE": "x",  # nothing close
            "FORWARDAUTH_PORT_FILE": "/run/secrets/port",  # only secrets take _FILE
            "FORWARDAUTH_HMAC_SECRET_FILE": "/run/secrets/hmac",
            "FORWARDAUTH_DEMO_PASSWORD": "x",
            "FORWARDAUTH_ADDR": "forwardauth:8080",  # read elsewhere
            "FORWARDAUTH_PORT": "9000",
            "PATH": "/usr/bin",
        }
    )
    assert found == [
        "FORWARDAUTH_COOKIE_DOMIAN: unknown variable, ignored (did you mean FORWARDAUTH_COOKIE_DOMAIN?)",
        "FORWARDAUTH_PORT_FILE: unknown variable, ignored (did you mean FORWARDAUTH_PORT?)",
        "FORWARDAUTH_SOMETHING_ELSE: unknown variable, ignored",
        "forwardauth_port: unknown variable, ignored (did you mean FORWARDAUTH_PORT? names are upper case)",
    ]


def test_a_variable_added_to_the_settings_is_known_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert unknown_variables({"FORWARDAUTH_BRAND_NEW": "1"})
    monkeypatch.setattr(config, "VARIABLES", (*config.VARIABLES, config.Variable("brand_new", str, "", "test")))
    assert unknown_variables({"FORWARDAUTH_BRAND_NEW": "1"}) == []


@pytest.mark.parametrize(
    "url,shown",
    [
        ("postgresql://fa:hunter2@db:5432/auth", "postgresql://fa:****@db:5432/auth"),
        (
            "postgresql://fa@db/auth?password=hunter2&sslmode=require",
            "postgresql://fa@db/auth?password=****&sslmode=require",
        ),
        ("redis://:hunter2@cache:6379/0", "redis://:****@cache:6379/0"),
        ("redis+sentinel://u:hunter2@s1:26379,s2:26379/main/0", "redis+sentinel://u:****@s1:26379,s2:26379/main/0"),
        ("redis://hunter2@cache/0", "redis://hunter2@cache/0"),  # a user name, not a password
        ("postgresql://fa:p%40ss@w0rd@db/auth", "postgresql://fa:****@db/auth"),
    ],
)
def test_urls_are_shown_with_the_password_masked(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_values_in_effect_mask_every_secret(tmp_path: Path) -> None:
    environ = {
        "FORWARDAUTH_SIGNING_ALG": "HS256",
        "FORWARDAUTH_HMAC_SECRET": SECRET,
        "FORWARDAUTH_DATABASE_URL": f"postgresql://fa:{SECRET}@db/auth",
        "FORWARDAUTH_COOKIE_SECURE": "false",
        "FORWARDAUTH_ACCESS_TTL": "5m",
        "FORWARDAUTH_DATA_DIR": str(tmp_path),
    }
    rows = {name: (value, origin) for name, value, origin in values_in_effect(load(environ), environ)}
    assert {name for name in rows} == {var.env for var in config.VARIABLES}
    assert SECRET not in repr(rows)
    assert rows["FORWARDAUTH_HMAC_SECRET"] == ("****", "set")
    assert rows["FORWARDAUTH_DATABASE_URL"] == ("postgresql://fa:****@db/auth", "set")
    assert rows["FORWARDAUTH_REDIS_URL"] == ("(embedded)", "default")
    assert rows["FORWARDAUTH_COOKIE_SECURE"] == ("false", "set")
    assert rows["FORWARDAUTH_ACCESS_TTL"] == ("300s", "set")
    assert rows["FORWARDAUTH_KEYS_DIR"] == (str(tmp_path / "keys"), "default")
    assert rows["FORWARDAUTH_ISSUER"] == ("http://127.0.0.1:8080", "default")

    secret_file = tmp_path / "redis_url"
    secret_file.write_text(f"redis://:{SECRET}@cache:6379/0\n")
    from_file = {"FORWARDAUTH_REDIS_URL_FILE": str(secret_file)}
    rows = {name: (value, origin) for name, value, origin in values_in_effect(load(from_file), from_file)}
    assert rows["FORWARDAUTH_REDIS_URL"] == ("redis://:****@cache:6379/0", "from FORWARDAUTH_REDIS_URL_FILE")
