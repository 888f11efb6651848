"""The README stays true: every variable, command and endpoint is in it."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from forwardauth import cli, config

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_the_two_commands() -> None:
    assert "make run" in README and "make test" in README


def test_every_variable_is_documented() -> None:
    missing = [v.env for v in config.VARIABLES if v.env not in README]
    assert not missing


def test_the_table_is_the_config_output() -> None:
    """Each row reads exactly as `forwardauth config` prints it (regenerate the table if not)."""
    stale = [
        env for env, default, meaning in config.variable_rows() if f"| `{env}` | {default} | {meaning} |" not in README
    ]
    assert not stale


def test_file_variants_of_secrets_are_documented() -> None:
    assert "_FILE" in README
    for var in config.VARIABLES:
        if var.secret:
            assert f"`{var.env}`" in README


def test_every_command_is_documented() -> None:
    top = cli.parser()
    sub = next(a for a in top._actions if a.dest == "command")
    for name, parser in sub.choices.items():  # type: ignore[union-attr]
        nested = [a for a in parser._actions if a.dest == "action"]
        if nested:
            for action in nested[0].choices:  # type: ignore[union-attr]
                assert (
                    f"forwardauth {name} {action}" in README or f"/ `{action}" in README or f"/ {action}" in README
                ), f"forwardauth {name} {action}"
        else:
            assert f"forwardauth {name}" in README, name


def test_every_route_is_documented(pure_settings: config.Settings) -> None:
    from forwardauth.http.app import create_app

    app: web.Application = create_app(pure_settings)
    for resource in app.router.resources():
        path = resource.canonical.split("{")[0].rstrip("/") or "/"
        assert path in README, path
