"""`auth`: the key read from the environment, tokens verified into a Principal (or refused
saying why, never with the token), the bearer metadata, the tokens a process mints for its
own calls, and the secret `appforge up` keeps in its data directory."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeAlias

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from appforge.services.common import auth, secrets
from appforge.services.common.auth import AuthSettings, Principal, Role, Verifier, bearer
from appforge.services.common.errors import ConfigError, Unauthenticated

SECRET = b"0123456789abcdef0123456789abcdef"  # 32 bytes: what HS256 needs (RFC 7518 3.2)
OTHER_SECRET = b"fedcba9876543210fedcba9876543210"
# Fixed instants, so that no test depends on when it runs.
FUTURE = 4_102_444_800  # 2100-01-01
PAST = 946_684_800  # 2000-01-01


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    secrets.forget_all()
    yield
    secrets.forget_all()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


PrivateKey: TypeAlias = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def written(directory: Path, name: str, content: bytes) -> str:
    path = directory / name
    path.write_bytes(content)
    return str(path)


def claims(**overrides: Any) -> dict[str, Any]:
    """A user of team t1, valid until 2100, with `overrides` (None removes a claim)."""
    base: dict[str, Any] = {"sub": "alice", "role": "user", "teams": ["t1"], "exp": FUTURE}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: Mapping[str, Any], key: bytes = SECRET) -> str:
    return jwt.encode(dict(payload), key, algorithm="HS256")


def hs256_verifier(*, issuer: str = "", audience: str = "") -> Verifier:
    return AuthSettings(secret=SECRET, issuer=issuer, audience=audience).verifier()


def refusal(verifier: Verifier, token: str) -> str:
    """Why `verifier` refuses `token`; never with the token in it."""
    with pytest.raises(Unauthenticated) as err:
        verifier.verify(token)
    message = str(err.value)
    assert token not in message
    for part in token.split("."):
        assert not part or part not in message
    return message


# --- AuthSettings.from_env ---------------------------------------------------------------


def test_no_key_means_tokens_are_not_checked() -> None:
    settings = AuthSettings.from_env({})
    assert not settings.enabled
    assert settings.keys() is None
    assert settings.minter("builder") is None
    with pytest.raises(ConfigError, match=auth.SECRET):
        settings.verifier()


def test_a_secret_is_hs256_and_every_setting_is_read() -> None:
    settings = AuthSettings.from_env(
        {
            auth.SECRET: SECRET.decode(),
            auth.ISSUER: "https://id.example",
            auth.AUDIENCE: "appforge",
            auth.SERVICE_TOKEN_TTL: "120",
            auth.INSECURE: "TRUE",
        }
    )
    assert settings == AuthSettings(
        secret=SECRET,
        issuer="https://id.example",
        audience="appforge",
        service_token_ttl=120.0,
        insecure=True,
    )
    keys = settings.keys()
    assert keys is not None and keys.algorithm == "HS256"
    assert SECRET.decode() not in repr(settings)


def test_a_secret_file_is_read_without_its_surrounding_white_space(tmp_path: Path) -> None:
    path = written(tmp_path, "secret", b"  " + SECRET + b"\n")
    assert AuthSettings.from_env({auth.SECRET_FILE: path}).secret == SECRET


def test_rsa_public_and_private_key_files_are_rs256(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    settings = AuthSettings.from_env(
        {
            auth.PUBLIC_KEY_FILE: written(tmp_path, "public.pem", public_pem(rsa_key)),
            auth.PRIVATE_KEY_FILE: written(tmp_path, "private.pem", private_pem(rsa_key)),
        }
    )
    keys = settings.keys()
    assert keys is not None and keys.algorithm == "RS256"
    minter = settings.minter("builder")
    assert minter is not None
    token = minter.token(teams=["t1"], role=Role.SERVICE)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert settings.verifier().verify(token) == Principal(
        subject="builder", role=Role.SERVICE, teams=frozenset({"t1"})
    )
    # The private key is a secret: no log line or status detail shows it.
    pem_text = private_pem(rsa_key).decode().strip()
    assert secrets.redact(f"key: {pem_text}") == "key: [redacted]"


def test_an_ed25519_key_is_eddsa(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    settings = AuthSettings.from_env(
        {
            auth.PUBLIC_KEY_FILE: written(tmp_path, "public.pem", public_pem(key)),
            auth.PRIVATE_KEY_FILE: written(tmp_path, "private.pem", private_pem(key)),
        }
    )
    keys = settings.keys()
    assert keys is not None and keys.algorithm == "EdDSA"
    minter = settings.minter("deployer")
    assert minter is not None
    token = minter.token(teams=[], role=Role.ADMIN)
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert settings.verifier().verify(token).role is Role.ADMIN


def test_a_public_key_alone_verifies_but_cannot_sign(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    settings = AuthSettings.from_env(
        {auth.PUBLIC_KEY_FILE: written(tmp_path, "public.pem", public_pem(rsa_key))}
    )
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert settings.verifier().verify(token).subject == "alice"
    with pytest.raises(ConfigError, match=auth.PRIVATE_KEY_FILE):
        settings.minter("builder")


def test_a_private_key_alone_both_signs_and_verifies(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    settings = AuthSettings.from_env(
        {auth.PRIVATE_KEY_FILE: written(tmp_path, "private.pem", private_pem(rsa_key))}
    )
    assert settings.public_key == b""
    minter = settings.minter("builder")
    assert minter is not None
    token = minter.token(teams=["t1"], role=Role.SERVICE)
    assert settings.verifier().verify(token).teams == frozenset({"t1"})


def test_a_private_key_that_is_not_the_public_keys_is_refused(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    env = {
        auth.PUBLIC_KEY_FILE: written(tmp_path, "public.pem", public_pem(rsa_key)),
        auth.PRIVATE_KEY_FILE: written(tmp_path, "private.pem", private_pem(other)),
    }
    with pytest.raises(ConfigError) as err:
        AuthSettings.from_env(env)
    assert str(err.value) == f"{auth.PRIVATE_KEY_FILE} is not the key of {auth.PUBLIC_KEY_FILE}"


def test_a_secret_and_a_key_file_exclude_each_other(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    for variable, pem in (
        (auth.PUBLIC_KEY_FILE, public_pem(rsa_key)),
        (auth.PRIVATE_KEY_FILE, private_pem(rsa_key)),
    ):
        env = {auth.SECRET: SECRET.decode(), variable: written(tmp_path, "key.pem", pem)}
        with pytest.raises(ConfigError, match="exclude each other"):
            AuthSettings.from_env(env)


def test_a_secret_and_a_secret_file_exclude_each_other(tmp_path: Path) -> None:
    env = {auth.SECRET: SECRET.decode(), auth.SECRET_FILE: written(tmp_path, "s", SECRET)}
    with pytest.raises(ConfigError, match="not both"):
        AuthSettings.from_env(env)


@pytest.mark.parametrize("length", [1, 15, 16, 31])
def test_a_secret_shorter_than_the_hash_is_refused(length: int) -> None:
    # RFC 7518 3.2: an HS256 key at least as long as the hash, 32 bytes.
    with pytest.raises(ConfigError) as err:
        AuthSettings.from_env({auth.SECRET: "x" * length})
    assert str(err.value) == f"{auth.SECRET} must be at least 32 bytes long (HS256)"


def test_the_shortest_secret_accepted_signs_and_verifies_without_a_warning() -> None:
    settings = AuthSettings.from_env({auth.SECRET: "s" * 32})
    minter = settings.minter("builder")
    assert minter is not None
    token = minter.token(teams=["t1"], role=Role.SERVICE)  # filterwarnings=error: none here
    assert settings.verifier().verify(token).subject == "builder"


@pytest.mark.parametrize(
    "variable", [auth.SECRET_FILE, auth.PUBLIC_KEY_FILE, auth.PRIVATE_KEY_FILE]
)
def test_a_file_that_cannot_be_read_is_refused_naming_its_variable(
    tmp_path: Path, variable: str
) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(ConfigError) as err:
        AuthSettings.from_env({variable: str(missing)})
    assert str(err.value).startswith(f"{variable}={missing}: cannot read it")


@pytest.mark.parametrize(
    ("variable", "content"),
    [
        pytest.param(auth.PUBLIC_KEY_FILE, b"not a key", id="public-not-pem"),
        pytest.param(auth.PRIVATE_KEY_FILE, b"not a key", id="private-not-pem"),
    ],
)
def test_a_file_that_is_not_a_key_is_refused_naming_its_variable(
    tmp_path: Path, variable: str, content: bytes
) -> None:
    with pytest.raises(ConfigError, match=variable):
        AuthSettings.from_env({variable: written(tmp_path, "key.pem", content)})


def test_an_encrypted_private_key_is_refused(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    with pytest.raises(ConfigError, match="unencrypted"):
        AuthSettings.from_env({auth.PRIVATE_KEY_FILE: written(tmp_path, "k.pem", encrypted)})


def test_a_key_of_another_kind_than_rsa_or_ed25519_is_refused(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ConfigError, match="only RSA"):
        AuthSettings.from_env({auth.PUBLIC_KEY_FILE: written(tmp_path, "k.pem", public_pem(key))})


@pytest.mark.parametrize("raw", ["soon", "9", "86401", "-300", "nan", "inf"])
def test_a_service_token_ttl_that_is_not_10s_to_a_day_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match=auth.SERVICE_TOKEN_TTL):
        AuthSettings.from_env({auth.SECRET: SECRET.decode(), auth.SERVICE_TOKEN_TTL: raw})


@pytest.mark.parametrize(("raw", "seconds"), [("10", 10.0), ("86400", 86400.0), ("", 300.0)])
def test_a_service_token_ttl_within_bounds_is_taken(raw: str, seconds: float) -> None:
    env = {auth.SECRET: SECRET.decode(), auth.SERVICE_TOKEN_TTL: raw}
    assert AuthSettings.from_env(env).service_token_ttl == seconds


# --- Verifier ----------------------------------------------------------------------------


def test_a_good_token_is_its_principal() -> None:
    token = hs256(claims(sub="alice", role="user", teams=["t1", "t2"]))
    assert hs256_verifier().verify(token) == Principal(
        subject="alice", role=Role.USER, teams=frozenset({"t1", "t2"})
    )


def test_a_token_without_teams_acts_for_none() -> None:
    principal = hs256_verifier().verify(hs256(claims(teams=None, role="service")))
    assert principal == Principal(subject="alice", role=Role.SERVICE)
    assert not principal.acts_for("t1")


def test_an_admin_acts_for_every_team_and_a_user_for_its_own() -> None:
    admin = Principal(subject="root", role=Role.ADMIN)
    user = Principal(subject="alice", role=Role.USER, teams=frozenset({"t1"}))
    assert admin.acts_for("any") and user.acts_for("t1") and not user.acts_for("t2")


def test_an_expired_token_is_refused_as_expired() -> None:
    assert "expired" in refusal(hs256_verifier(), hs256(claims(exp=PAST)))


def test_a_token_not_valid_yet_is_refused() -> None:
    assert "not valid yet" in refusal(hs256_verifier(), hs256(claims(nbf=FUTURE - 1)))


def test_a_token_signed_with_another_secret_is_refused() -> None:
    message = refusal(hs256_verifier(), hs256(claims(), key=OTHER_SECRET))
    assert message == "the token is not signed by a key this service trusts"


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def test_an_hs256_token_keyed_with_the_public_key_is_refused_by_an_rs256_verifier(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    # The algorithm confusion attack: the public key is public, so an attacker HMACs with it.
    public = public_pem(rsa_key)
    verifier = AuthSettings(public_key=public).verifier()
    signing_input = (
        _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        + b"."
        + _b64(json.dumps(claims(role="admin")).encode())
    )
    signature = _b64(hmac.new(public, signing_input, hashlib.sha256).digest())
    forged = (signing_input + b"." + signature).decode()
    assert refusal(verifier, forged) == "the token must be signed with RS256"


def test_an_unsigned_token_is_refused() -> None:
    unsigned = jwt.encode(claims(role="admin"), "", algorithm="none")
    assert refusal(hs256_verifier(), unsigned) == "the token must be signed with HS256"


def test_a_token_without_exp_is_refused_naming_exp() -> None:
    assert refusal(hs256_verifier(), hs256(claims(exp=None))) == "the token has no 'exp' claim"


def test_a_token_without_sub_is_refused_naming_sub() -> None:
    assert refusal(hs256_verifier(), hs256(claims(sub=None))) == "the token has no 'sub' claim"


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        pytest.param(
            {"role": "root"}, "'role' claim must be one of user, service, admin", id="role"
        ),
        pytest.param({"role": None}, "'role' claim must be one of", id="no-role"),
        pytest.param({"teams": "t1"}, "'teams' claim must be a list", id="teams-a-string"),
        pytest.param({"teams": [1]}, "'teams' claim must be a list", id="teams-not-strings"),
        pytest.param({"teams": [""]}, "'teams' claim must be a list", id="teams-empty-id"),
        pytest.param({"sub": ""}, "'sub' claim must be a non-empty string", id="empty-sub"),
        pytest.param({"sub": 7}, "not valid", id="sub-not-a-string"),
    ],
)
def test_malformed_claims_are_refused(overrides: dict[str, Any], words: str) -> None:
    assert words in refusal(hs256_verifier(), hs256(claims(**overrides)))


def test_issuer_and_audience_are_checked_when_set() -> None:
    verifier = hs256_verifier(issuer="https://id.example", audience="appforge")
    good = claims(iss="https://id.example", aud="appforge")
    assert verifier.verify(hs256(good)).subject == "alice"
    assert verifier.verify(hs256({**good, "aud": ["other", "appforge"]})).subject == "alice"
    assert refusal(verifier, hs256({**good, "iss": "https://evil.example"})) == (
        "the token's issuer is not 'https://id.example'"
    )
    assert refusal(verifier, hs256({**good, "aud": "other"})) == (
        "the token's audience is not 'appforge'"
    )
    assert refusal(verifier, hs256(claims(aud="appforge"))) == "the token has no 'iss' claim"
    assert refusal(verifier, hs256(claims(iss="https://id.example"))) == (
        "the token has no 'aud' claim"
    )


@pytest.mark.parametrize("near", ["id.example", "https://id.example/", "https://id.example.evil"])
def test_an_issuer_is_matched_whole(near: str) -> None:
    verifier = hs256_verifier(issuer="https://id.example")
    assert "issuer is not" in refusal(verifier, hs256(claims(iss=near)))


def test_issuer_and_audience_are_not_checked_when_unset() -> None:
    token = hs256(claims(iss="anyone", aud="anything"))
    assert hs256_verifier().verify(token).subject == "alice"


@pytest.mark.parametrize("garbage", ["garbage", "a.b.c", "", "Bearer x.y.z"])
def test_what_is_not_a_jwt_is_refused_as_such(garbage: str) -> None:
    with pytest.raises(Unauthenticated) as err:
        hs256_verifier().verify(garbage)
    assert str(err.value) == "the token is not a well-formed JWT"


def test_a_verified_token_is_answered_again_until_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    verifier = hs256_verifier()
    token = hs256(claims())
    first = verifier.verify(token, now=FUTURE - 100)
    assert verifier.verify(token, now=FUTURE - 1) == first
    assert len(decoded) == 1
    # At its exp the remembered answer is gone: the token is verified again.
    assert verifier.verify(token, now=FUTURE) == first
    assert len(decoded) == 2


# --- bearer ------------------------------------------------------------------------------


def test_bearer_finds_the_token_among_the_metadata() -> None:
    metadata = [("user-agent", "grpc"), ("authorization", "Bearer abc.def.ghi")]
    assert bearer(metadata) == "abc.def.ghi"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"Bearer abc.def.ghi", id="bytes"),
        pytest.param("bearer abc.def.ghi", id="lower-case"),
        pytest.param("BEARER abc.def.ghi", id="upper-case"),
        pytest.param("  Bearer   abc.def.ghi  ", id="padded"),
    ],
)
def test_bearer_takes_any_spelling_of_the_scheme(value: str | bytes) -> None:
    assert bearer([("authorization", value)]) == "abc.def.ghi"


@pytest.mark.parametrize("metadata", [None, [], [("x-other", "Bearer abc")]])
def test_bearer_without_authorization_metadata_is_refused(
    metadata: list[tuple[str, str | bytes]] | None,
) -> None:
    with pytest.raises(Unauthenticated, match="needs an 'authorization: Bearer <token>'"):
        bearer(metadata)


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Bearer ", "Bearer", "abc.def.ghi", ""])
def test_bearer_of_another_shape_is_refused(value: str) -> None:
    with pytest.raises(Unauthenticated) as err:
        bearer([("authorization", value)])
    assert str(err.value) == "the authorization metadata must be 'Bearer <token>'"


def test_metadata_of_is_what_bearer_reads() -> None:
    assert bearer(auth.metadata_of("abc.def.ghi")) == "abc.def.ghi"


# --- Minter ------------------------------------------------------------------------------


class Clock:
    """Seconds since the epoch that move only when a test moves them."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def minter(clock: Clock, *, issuer: str = "", audience: str = "") -> auth.Minter:
    settings = AuthSettings(
        secret=SECRET, issuer=issuer, audience=audience, service_token_ttl=300.0
    )
    made = settings.minter("builder", clock=clock)
    assert made is not None
    return made


def unverified(token: str) -> dict[str, Any]:
    payload: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return payload


def test_a_minted_token_carries_its_claims() -> None:
    clock = Clock(1_800_000_000.5)
    token = minter(clock).token(teams=["t2", "t1", "t2"], role=Role.SERVICE)
    # Signed with the secret; the instants are the clock's, not now.
    payload = jwt.decode(
        token, SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False}
    )
    assert payload == {
        "sub": "builder",
        "role": "service",
        "teams": ["t1", "t2"],
        "iat": 1_800_000_000,
        "exp": 1_800_000_300,
    }


def test_a_minted_token_takes_its_own_ttl_and_subject() -> None:
    token = minter(Clock(1_800_000_000)).token(
        teams=[], role=Role.ADMIN, ttl=3600, subject="cli:ops"
    )
    payload = unverified(token)
    assert (payload["sub"], payload["role"], payload["exp"] - payload["iat"]) == (
        "cli:ops",
        "admin",
        3600,
    )


def test_issuer_and_audience_are_in_what_is_minted_when_set() -> None:
    clock = Clock(1_800_000_000)
    payload = unverified(
        minter(clock, issuer="iss", audience="aud").token(teams=[], role=Role.ADMIN)
    )
    assert (payload["iss"], payload["aud"]) == ("iss", "aud")
    assert not {"iss", "aud"} & set(unverified(minter(clock).token(teams=[], role=Role.ADMIN)))


def test_what_is_minted_is_what_the_verifier_of_the_same_settings_takes() -> None:
    settings = AuthSettings(secret=SECRET, issuer="iss", audience="aud")
    made = settings.minter("deployer")
    assert made is not None
    token = made.token(teams=["t1"], role=Role.SERVICE)
    assert settings.verifier().verify(token) == Principal(
        subject="deployer", role=Role.SERVICE, teams=frozenset({"t1"})
    )


def test_metadata_is_reused_while_more_than_half_its_ttl_is_left() -> None:
    clock = Clock(1_800_000_000)
    made = minter(clock)
    first = made.metadata(["t1"])
    assert first[0][0] == "authorization"
    clock.now += 149
    assert made.metadata(["t1"]) is first
    clock.now += 1  # half of the 300 s left: minted again
    second = made.metadata(["t1"])
    assert second != first
    assert unverified(bearer(second))["exp"] == 1_800_000_450
    assert made.metadata(["t1"]) is second


def test_metadata_is_minted_per_teams_and_role() -> None:
    made = minter(Clock(1_800_000_000))
    service = made.metadata(["t1", "t2"])
    assert made.metadata(["t2", "t1"]) is service
    assert made.metadata(["t1"]) != service
    assert made.metadata(["t1", "t2"], Role.ADMIN) != service
    assert unverified(bearer(service))["role"] == "service"


def test_acting_for_an_admin_is_an_admin_token() -> None:
    made = minter(Clock(1_800_000_000))
    payload = unverified(bearer(made.acting_for(Principal(subject="root", role=Role.ADMIN))))
    assert (payload["sub"], payload["role"], payload["teams"]) == ("builder", "admin", [])


@pytest.mark.parametrize("role", [Role.USER, Role.SERVICE])
def test_acting_for_anyone_else_is_a_service_token_of_their_teams(role: Role) -> None:
    made = minter(Clock(1_800_000_000))
    caller = Principal(subject="alice", role=role, teams=frozenset({"t1", "t2"}))
    payload = unverified(bearer(made.acting_for(caller)))
    assert (payload["sub"], payload["role"], payload["teams"]) == (
        "builder",
        "service",
        ["t1", "t2"],
    )


def test_minted_tokens_and_the_secret_are_redacted() -> None:
    made = minter(Clock(1_800_000_000))
    token = made.token(teams=["t1"], role=Role.SERVICE)
    header = bearer(made.metadata(["t2"]))
    line = f"calling with {token} and authorization: Bearer {header}; key {SECRET.decode()}"
    assert secrets.redact(line) == (
        "calling with [redacted] and authorization: Bearer [redacted]; key [redacted]"
    )


def test_tokens_minted_again_and_again_do_not_pile_up_as_secrets() -> None:
    """Tokens are redacted by their shape, not registered one by one."""
    clock = Clock(1_800_000_000)
    made = minter(clock)
    for _ in range(1000):  # about 55 hours of a builder calling for one team
        made.metadata(["t1"])
        clock.now += 200  # past half the 300 s ttl: minted again
    # Reading the private list: no public call says how long it is.
    assert len(secrets._secrets) < 100


# --- the secret of a data directory -------------------------------------------------------


def test_local_secret_is_none_when_up_made_none(tmp_path: Path) -> None:
    assert auth.local_secret(tmp_path) is None
    assert auth.local_secret(tmp_path / "no-such-dir") is None


def test_ensure_local_secret_makes_an_owner_only_file_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    made = auth.ensure_local_secret(data_dir)
    path = data_dir / auth.LOCAL_SECRET
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(made) >= 32
    assert path.read_bytes().strip() == made
    assert auth.ensure_local_secret(data_dir) == made
    assert auth.local_secret(data_dir) == made
    # What it made is a key the settings take.
    settings = AuthSettings(secret=made)
    signer = settings.minter("cli")
    assert signer is not None
    token = signer.token(teams=["t1"], role=Role.USER)
    assert settings.verifier().verify(token).subject == "cli"


def test_ensure_local_secret_keeps_a_secret_already_there(tmp_path: Path) -> None:
    path = tmp_path / auth.LOCAL_SECRET
    path.parent.mkdir(parents=True)
    path.write_bytes(SECRET + b"\n")
    assert auth.ensure_local_secret(tmp_path) == SECRET


def test_ensure_local_secret_answers_one_secret_when_the_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / auth.LOCAL_SECRET
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    first = auth.ensure_local_secret(tmp_path)
    assert auth.ensure_local_secret(tmp_path) == first
    assert auth.local_secret(tmp_path) == first
