"""Who is calling: JSON Web Tokens verified at every server's edge, and minted for the services'
own calls to each other.

A token is `authorization: Bearer <JWT>` metadata with the claims `sub` (who), `role`
(`user`, `service` for the builder and the deployer acting for an execution's team, or
`admin`), `teams` (the team ids it acts for) and `exp` (required). The key:

- `APPFORGE_AUTH_JWT_SECRET` (or `APPFORGE_AUTH_JWT_SECRET_FILE`): HS256, one shared secret
  that verifies and signs;
- `APPFORGE_AUTH_JWT_PUBLIC_KEY_FILE`: RS256 or EdDSA (the algorithm is the key's) verifies;
  `APPFORGE_AUTH_JWT_PRIVATE_KEY_FILE` signs, where a process mints (the builder, the deployer,
  `appforge token`); a private key alone does both.

`APPFORGE_AUTH_ISSUER` / `APPFORGE_AUTH_AUDIENCE`, when set, are checked and put in what is
minted. With no key at all, servers check nothing: `appforge serve` refuses that unless told
`--insecure` (or `APPFORGE_INSECURE=true`). The interceptor (`server.py`) verifies the token,
`access.py` applies the service's rules, and the servicer finds the caller as a `Principal`
(`caller()`), never as raw metadata.
"""

from __future__ import annotations

import contextvars
import os
import secrets as random_secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeAlias

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from appforge.services.common import secrets
from appforge.services.common.errors import ConfigError, Unauthenticated

SECRET = "APPFORGE_AUTH_JWT_SECRET"
SECRET_FILE = "APPFORGE_AUTH_JWT_SECRET_FILE"
PUBLIC_KEY_FILE = "APPFORGE_AUTH_JWT_PUBLIC_KEY_FILE"
PRIVATE_KEY_FILE = "APPFORGE_AUTH_JWT_PRIVATE_KEY_FILE"
ISSUER = "APPFORGE_AUTH_ISSUER"
AUDIENCE = "APPFORGE_AUTH_AUDIENCE"
SERVICE_TOKEN_TTL = "APPFORGE_AUTH_SERVICE_TOKEN_TTL"
INSECURE = "APPFORGE_INSECURE"
TOKEN = "APPFORGE_TOKEN"
KEY_VARIABLES = (SECRET, SECRET_FILE, PUBLIC_KEY_FILE, PRIVATE_KEY_FILE)
# Where `appforge up` keeps the secret it made, under its data directory.
LOCAL_SECRET = Path("auth") / "jwt-secret"

Metadata: TypeAlias = tuple[tuple[str, str], ...]


class Role(Enum):
    USER = "user"
    SERVICE = "service"
    ADMIN = "admin"


@dataclass(frozen=True, kw_only=True)
class Principal:
    """A verified caller."""

    subject: str
    role: Role
    teams: frozenset[str] = frozenset()

    def acts_for(self, team_id: str) -> bool:
        """Whether this caller may touch what belongs to `team_id`."""
        return self.role is Role.ADMIN or team_id in self.teams


# The services themselves, where no caller is behind a call (a notice delivered later, the
# team of an app looked up for a deployment's watcher).
SYSTEM = Principal(subject="appforge", role=Role.ADMIN)

_caller: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "appforge_caller", default=None
)


def caller() -> Principal | None:
    """Who made the RPC being served (None when the server checks no tokens)."""
    return _caller.get()


def set_caller(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _caller.set(principal)


@dataclass(frozen=True, kw_only=True)
class AuthSettings:
    """The key (contents, read once at start-up) and the claims every token must match."""

    secret: bytes = field(default=b"", repr=False)
    public_key: bytes = b""
    private_key: bytes = field(default=b"", repr=False)
    issuer: str = ""
    audience: str = ""
    service_token_ttl: float = 300.0
    insecure: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AuthSettings:
        secret = env.get(SECRET, "").encode()
        if env.get(SECRET_FILE):
            if secret:
                raise ConfigError(f"set {SECRET} or {SECRET_FILE}, not both")
            secret = _read(env, SECRET_FILE).strip()
        public_key = _read(env, PUBLIC_KEY_FILE) if env.get(PUBLIC_KEY_FILE) else b""
        private_key = _read(env, PRIVATE_KEY_FILE) if env.get(PRIVATE_KEY_FILE) else b""
        if secret and (public_key or private_key):
            raise ConfigError(f"{SECRET} (HS256) and a key file (RS256/EdDSA) exclude each other")
        ttl_text = env.get(SERVICE_TOKEN_TTL) or "300"
        try:
            ttl = float(ttl_text)
        except ValueError:
            raise ConfigError(f"{SERVICE_TOKEN_TTL} must be a number of seconds") from None
        if not 10 <= ttl <= 86_400:
            raise ConfigError(f"{SERVICE_TOKEN_TTL} must be between 10 and 86400 seconds")
        settings = cls(
            secret=secret,
            public_key=public_key,
            private_key=private_key,
            issuer=env.get(ISSUER, ""),
            audience=env.get(AUDIENCE, ""),
            service_token_ttl=ttl,
            insecure=(env.get(INSECURE) or "").lower() in ("1", "true", "yes"),
        )
        settings.keys()  # a key that does not load fails at start-up, naming its variable
        return settings

    @property
    def enabled(self) -> bool:
        """Whether servers verify tokens (a key is configured)."""
        return bool(self.secret or self.public_key or self.private_key)

    def keys(self) -> _Keys | None:
        if not self.enabled:
            return None
        if self.secret:
            if len(self.secret) < 32:  # RFC 7518 3.2: a key as long as the hash, at least
                raise ConfigError(f"{SECRET} must be at least 32 bytes long (HS256)")
            secrets.register(self.secret.decode(errors="replace"))
            return _Keys(algorithm="HS256", verifying=self.secret, signing=self.secret)
        return _asymmetric(self.public_key, self.private_key)

    def verifier(self) -> Verifier:
        keys = self.keys()
        if keys is None:
            variables = ", ".join(KEY_VARIABLES)
            raise ConfigError(f"no key to verify tokens with: set one of {variables}")
        return Verifier(keys, issuer=self.issuer, audience=self.audience)

    def minter(self, subject: str, clock: Callable[[], float] = time.time) -> Minter | None:
        """What signs this process's own tokens; None when tokens are not checked."""
        keys = self.keys()
        if keys is None:
            return None
        if keys.signing is None:
            raise ConfigError(
                f"{subject} calls other services and signs its tokens: "
                f"set {PRIVATE_KEY_FILE} (the key of {PUBLIC_KEY_FILE})"
            )
        return Minter(
            keys, subject=subject, issuer=self.issuer, audience=self.audience,
            ttl=self.service_token_ttl, clock=clock,
        )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class _Keys:
    algorithm: str
    verifying: Any = field(repr=False)
    signing: Any = field(default=None, repr=False)


def _asymmetric(public_pem: bytes, private_pem: bytes) -> _Keys:
    private: Any = None
    if private_pem:
        try:
            private = serialization.load_pem_private_key(private_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{PRIVATE_KEY_FILE} is not an unencrypted PEM private key") from exc
        secrets.register(private_pem.decode(errors="replace").strip())
    public: Any = private.public_key() if private is not None else None
    if public_pem:
        try:
            given = serialization.load_pem_public_key(public_pem)
        except ValueError as exc:
            raise ConfigError(f"{PUBLIC_KEY_FILE} is not a PEM public key") from exc
        if public is not None and _public_bytes(public) != _public_bytes(given):
            raise ConfigError(f"{PRIVATE_KEY_FILE} is not the key of {PUBLIC_KEY_FILE}")
        public = given
    if isinstance(public, rsa.RSAPublicKey):
        algorithm = "RS256"
    elif isinstance(public, ed25519.Ed25519PublicKey):
        algorithm = "EdDSA"
    else:
        raise ConfigError(f"{PUBLIC_KEY_FILE}: only RSA (RS256) and Ed25519 (EdDSA) keys are taken")
    return _Keys(algorithm=algorithm, verifying=public, signing=private)


def _public_bytes(key: Any) -> bytes:
    encoded: bytes = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return encoded


def _read(env: Mapping[str, str], name: str) -> bytes:
    path = env[name]
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{name}={path}: cannot read it ({exc.strerror})") from exc


class Verifier:
    """Turns a token into a Principal, or refuses it with `Unauthenticated` saying why.

    A verified token is remembered until it expires (bounded), so the services' own tokens,
    reused for minutes, are verified once and not on every call.
    """

    def __init__(self, keys: _Keys, *, issuer: str = "", audience: str = "") -> None:
        self._keys = keys
        self.issuer = issuer
        self.audience = audience
        self._verified: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._size = 4096

    def verify(self, token: str, now: float | None = None) -> Principal:
        now = time.time() if now is None else now
        hit = self._verified.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        claims = self._decode(token)
        principal = principal_of(claims)
        self._verified[token] = (float(claims["exp"]), principal)
        if len(self._verified) > self._size:
            self._verified.popitem(last=False)
        return principal

    def _decode(self, token: str) -> dict[str, Any]:
        algorithm = self._keys.algorithm
        try:
            return jwt.decode(
                token,
                self._keys.verifying,
                algorithms=[algorithm],
                issuer=self.issuer or None,
                audience=self.audience or None,
                options={"require": ["exp", "sub"], "verify_aud": bool(self.audience)},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("the token is not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("the token is not signed by a key this service trusts") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthenticated(f"the token must be signed with {algorithm}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated(f"the token's issuer is not {self.issuer!r}") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(f"the token's audience is not {self.audience!r}") from None
        except jwt.DecodeError:
            raise Unauthenticated("the token is not a well-formed JWT") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the token is not valid ({type(exc).__name__})") from None


def principal_of(claims: Mapping[str, Any]) -> Principal:
    """The caller a verified token's claims name; Unauthenticated when they are malformed."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("the token's 'sub' claim must be a non-empty string")
    roles = ", ".join(r.value for r in Role)
    try:
        role = Role(claims.get("role"))
    except ValueError:
        raise Unauthenticated(f"the token's 'role' claim must be one of {roles}") from None
    teams = claims.get("teams", [])
    if not isinstance(teams, list) or not all(isinstance(t, str) and t for t in teams):
        raise Unauthenticated("the token's 'teams' claim must be a list of team ids")
    return Principal(subject=subject, role=role, teams=frozenset(teams))


def bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token of `authorization: Bearer <token>` in a call's metadata."""
    for key, value in metadata or ():
        if key != "authorization":
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
        return token.strip()
    raise Unauthenticated("this call needs an 'authorization: Bearer <token>' metadata entry")


class Minter:
    """Signs tokens: the services' own (short-lived, reused while more than half their life
    is left) and those `appforge token` prints."""

    def __init__(
        self,
        keys: _Keys,
        *,
        subject: str,
        issuer: str = "",
        audience: str = "",
        ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self.subject = subject
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self._clock = clock
        self._minted: dict[tuple[frozenset[str], Role], tuple[float, Metadata]] = {}

    def token(
        self,
        *,
        teams: Iterable[str],
        role: Role,
        ttl: float | None = None,
        subject: str | None = None,
    ) -> str:
        now = self._clock()
        claims: dict[str, Any] = {
            "sub": subject or self.subject,
            "role": role.value,
            "teams": sorted(set(teams)),
            "iat": int(now),
            "exp": int(now + (self.ttl if ttl is None else ttl)),
        }
        if self.issuer:
            claims["iss"] = self.issuer
        if self.audience:
            claims["aud"] = self.audience
        # Not registered as a secret one by one (a service mints one every few minutes):
        # `secrets.redact` hides anything shaped like a JWT.
        token: str = jwt.encode(claims, self._keys.signing, algorithm=self._keys.algorithm)
        return token

    def metadata(self, teams: Iterable[str], role: Role = Role.SERVICE) -> Metadata:
        """`authorization` metadata acting for `teams` with `role`."""
        key = (frozenset(teams), role)
        now = self._clock()
        minted = self._minted.get(key)
        if minted is not None and minted[0] - now > self.ttl / 2:
            return minted[1]
        metadata = (("authorization", f"Bearer {self.token(teams=key[0], role=role)}"),)
        if len(self._minted) > 1024:
            self._minted.clear()
        self._minted[key] = (now + self.ttl, metadata)
        return metadata

    def acting_for(self, principal: Principal) -> Metadata:
        """Metadata for a call made on behalf of `principal`: what it may see and no more
        (an admin's as admin, anyone else's as a service of the caller's teams)."""
        if principal.role is Role.ADMIN:
            return self.metadata((), Role.ADMIN)
        return self.metadata(principal.teams, Role.SERVICE)


def local_secret(data_dir: Path) -> bytes | None:
    """The secret `appforge up` made in `data_dir`, if it did."""
    try:
        return (data_dir / LOCAL_SECRET).read_bytes().strip() or None
    except FileNotFoundError:
        return None


def ensure_local_secret(data_dir: Path) -> bytes:
    """The secret of `data_dir`, made on first use (256 random bits, readable by its owner
    only). The file appears whole or not at all (written aside, then linked into place), so
    two `up`s starting at once agree on one secret, and a file left empty by a crash of an
    older version is replaced."""
    found = local_secret(data_dir)
    if found is not None:
        return found
    path = data_dir / LOCAL_SECRET
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    aside = path.with_name(f".{path.name}.{os.getpid()}.{random_secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(random_secrets.token_hex(32).encode() + b"\n")
    try:
        os.link(aside, path)  # fails if another made it first: theirs is kept
    except FileExistsError:
        if local_secret(data_dir) is None:  # there, but empty
            os.replace(aside, path)
    finally:
        aside.unlink(missing_ok=True)
    made = local_secret(data_dir)
    if made is None:
        raise ConfigError(f"cannot keep a signing secret in {path}")
    return made


def metadata_of(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)
