"""The CLI's tokens: `--ttl` durations, `appforge token` signed with the environment's key or
the secret `appforge up` keeps in its data directory, the credentials of the CLI's calls, and
`appforge serve` refusing to serve unchecked unless told."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from appforge.cli import main
from appforge.cli.tokens import credentials, parse_ttl, signing
from appforge.services.common import auth, secrets
from appforge.services.common.errors import ConfigError
from appforge.services.common.settings import Settings

SECRET = "0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    secrets.forget_all()
    yield
    secrets.forget_all()


@pytest.fixture(autouse=True)
def _root_logger() -> Iterator[None]:
    """`serve` configures logging for the process: put the root logger back after it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No key, no token, no insecure flag in the environment; the data directory empty."""
    for name in [*auth.KEY_VARIABLES, auth.TOKEN, auth.INSECURE, auth.ISSUER, auth.AUDIENCE]:
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in os.environ if n.startswith("APPFORGE_")]:
        monkeypatch.delenv(name)
    directory = tmp_path / "data"
    monkeypatch.setenv("APPFORGE_DATA_DIR", str(directory))
    return directory


def printed_token(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["token", *argv]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    return out.strip()


def decoded(
    token: str, key: bytes | str | ed25519.Ed25519PublicKey, algorithm: str = "HS256"
) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, key, algorithms=[algorithm])
    return claims


# --- parse_ttl ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("1h", 3600.0),
        ("7d", 604_800.0),
        ("1.5h", 5400.0),
        (" 2m ", 120.0),
    ],
)
def test_a_duration_is_seconds(raw: str, seconds: float) -> None:
    assert parse_ttl(raw) == seconds


@pytest.mark.parametrize("raw", ["", "0", "0s", "-1", "1x", "h", "1 hour", "1h30m"])
def test_what_is_not_a_positive_duration_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_ttl(raw)
    assert str(err.value) == (
        f"--ttl must be a positive duration such as 90s, 30m, 1h or 7d, not {raw!r}"
    )


# --- appforge token ----------------------------------------------------------------------


def test_token_is_signed_with_the_environments_secret(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(auth.SECRET, SECRET)
    argv = ["--team", "t2", "--team", "t1", "--role", "service", "--ttl", "30m"]
    token = printed_token(capsys, *argv, "--subject", "ops")
    claims = decoded(token, SECRET)
    assert (claims["sub"], claims["role"], claims["teams"]) == ("ops", "service", ["t1", "t2"])
    assert claims["exp"] - claims["iat"] == 1800
    assert not (data_dir / auth.LOCAL_SECRET).exists()  # the environment's key: none made


def test_token_defaults_to_a_user_of_no_team_for_an_hour(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(auth.SECRET, SECRET)
    claims = decoded(printed_token(capsys), SECRET)
    assert (claims["role"], claims["teams"], claims["exp"] - claims["iat"]) == ("user", [], 3600)
    assert claims["sub"].startswith("cli")


def test_token_names_the_issuer_and_audience_of_the_environment(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(auth.SECRET, SECRET)
    monkeypatch.setenv(auth.ISSUER, "https://id.example")
    monkeypatch.setenv(auth.AUDIENCE, "appforge")
    token = printed_token(capsys, "--role", "admin")
    verifier = auth.AuthSettings(
        secret=SECRET.encode(), issuer="https://id.example", audience="appforge"
    ).verifier()
    assert verifier.verify(token).role is auth.Role.ADMIN


def test_token_is_signed_with_a_private_key_file(
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "private.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    monkeypatch.setenv(auth.PRIVATE_KEY_FILE, str(path))
    token = printed_token(capsys, "--team", "t1")
    assert decoded(token, key.public_key(), "EdDSA")["teams"] == ["t1"]


def test_token_with_no_key_anywhere_exits_2_naming_the_variables(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "--team", "t1"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("appforge: no key to sign a token with")
    assert auth.SECRET in err and auth.PRIVATE_KEY_FILE in err
    assert str(data_dir / auth.LOCAL_SECRET) in err
    assert not (data_dir / auth.LOCAL_SECRET).exists()  # `token` makes no secret


def test_token_with_a_public_key_alone_exits_2_naming_the_private_key_variable(
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "public.pem"
    path.write_bytes(
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    monkeypatch.setenv(auth.PUBLIC_KEY_FILE, str(path))
    assert main(["token"]) == 2
    assert auth.PRIVATE_KEY_FILE in capsys.readouterr().err


def test_token_is_signed_with_the_secret_up_made_in_the_data_directory(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    made = auth.ensure_local_secret(data_dir)
    token = printed_token(capsys, "--team", "t1", "--ttl", "90s")
    claims = decoded(token, made)
    assert (claims["teams"], claims["exp"] - claims["iat"]) == (["t1"], 90)


def test_token_prefers_the_environments_key_to_the_data_directorys(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    auth.ensure_local_secret(data_dir)
    monkeypatch.setenv(auth.SECRET, SECRET)
    assert decoded(printed_token(capsys), SECRET)["role"] == "user"


@pytest.mark.parametrize("ttl", ["0", "forever"])
def test_token_with_a_bad_ttl_exits_2(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], ttl: str
) -> None:
    monkeypatch.setenv(auth.SECRET, SECRET)
    assert main(["token", "--ttl", ttl]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--ttl must be a positive duration" in err


def test_token_with_a_malformed_key_exits_2_naming_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(auth.SECRET, "short")
    assert main(["token"]) == 2
    assert f"{auth.SECRET} must be at least" in capsys.readouterr().err


# --- the credentials of the CLI's calls ----------------------------------------------------


def test_a_given_token_is_sent_as_it_is_and_kept_out_of_every_line(data_dir: Path) -> None:
    given = "given.token.value"
    settings = Settings.from_env()
    sent = credentials(given, settings, teams=["t1"], role=auth.Role.USER, ttl=60)
    assert sent == (("authorization", f"Bearer {given}"),)
    assert secrets.redact(f"calling with {given}") == "calling with [redacted]"


def test_the_token_of_the_environment_is_sent_when_none_is_given(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(auth.TOKEN, "env.token.value")
    monkeypatch.setenv(auth.SECRET, SECRET)  # a token given wins over minting one
    sent = credentials(None, Settings.from_env(), teams=[], role=auth.Role.ADMIN, ttl=60)
    assert sent == (("authorization", "Bearer env.token.value"),)


def test_calls_carry_no_token_when_there_is_no_key(data_dir: Path) -> None:
    settings = Settings.from_env()
    assert signing(settings) is None
    assert credentials(None, settings, teams=["t1"], role=auth.Role.USER, ttl=60) is None


def test_calls_carry_a_token_minted_from_the_data_directorys_secret(data_dir: Path) -> None:
    made = auth.ensure_local_secret(data_dir)
    settings = Settings.from_env()
    sent = credentials(None, settings, teams=["t1"], role=auth.Role.USER, ttl=60)
    assert sent is not None
    claims = decoded(auth.bearer(sent), made)
    assert (claims["role"], claims["teams"]) == ("user", ["t1"])


# --- appforge serve ----------------------------------------------------------------------


def test_serve_without_a_key_or_insecure_exits_2_naming_the_variables(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "chat"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("appforge: appforge serve checks a token on every call and has no key")
    for name in (auth.SECRET, auth.SECRET_FILE, auth.PUBLIC_KEY_FILE, auth.PRIVATE_KEY_FILE):
        assert name in err
    assert "--insecure" in err and auth.INSECURE in err
    assert not (data_dir / auth.LOCAL_SECRET).exists()  # only `up` makes one


def test_serve_with_a_key_that_does_not_load_exits_2_naming_it(
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(auth.PUBLIC_KEY_FILE, str(tmp_path / "missing.pem"))
    assert main(["serve", "chat"]) == 2
    assert f"{auth.PUBLIC_KEY_FILE}={tmp_path / 'missing.pem'}: cannot read it" in (
        capsys.readouterr().err
    )
