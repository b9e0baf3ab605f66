"""The secret values this process was given, and their removal from whatever it lets out.

A secret can reach text the process emits without anyone logging it on purpose: an endpoint
that echoes the API key in its error body (the error then goes to a log line, to the
assistant message's `error`, to a client's status details), a traceback of a failed
connection that prints its URL. So every log line, every status detail and every error the
builder records for an execution (its error, which the message's metadata shows) passes
through `redact`, which replaces each registered value
with `[redacted]`. The values come from the environment (`register_env`) at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

# Variables whose whole value is a secret, and those that are URLs with a password.
SECRET_VARIABLES = (
    "OPENAI_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "APPFORGE_AUTH_JWT_SECRET",
    "APPFORGE_TOKEN",
)
URL_VARIABLES = ("DATABASE_URL", "REDIS_URL")
REDACTED = "[redacted]"
# Shorter values would turn ordinary words into "[redacted]" (a password "test", say).
MIN_LENGTH = 6
# Any JSON Web Token: a base64url header that starts with '{"' ("eyJ"), a payload, a signature.
# Tokens are hidden by their shape, whoever minted them: there are too many (each service
# mints its own every few minutes) to register one by one.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

# Longest first, so that a secret inside another goes with it; ordered when one is
# registered (at start-up), not on each of the log lines `redact` runs on.
_secrets: tuple[str, ...] = ()


def register(value: str) -> None:
    """Treat `value` as a secret from now on (ignored when shorter than MIN_LENGTH)."""
    global _secrets
    if len(value) >= MIN_LENGTH and value not in _secrets:
        _secrets = tuple(sorted((*_secrets, value), key=len, reverse=True))


def register_env(env: Mapping[str, str]) -> None:
    """Register the secrets in `env`: SECRET_VARIABLES whole, URL_VARIABLES' passwords."""
    for name in SECRET_VARIABLES:
        register(env.get(name, ""))
    for name in URL_VARIABLES:
        try:
            password = urlsplit(env.get(name, "")).password
        except ValueError:
            continue
        if password:
            register(password)


def redact(text: str) -> str:
    """`text` with every registered secret, and every JWT, replaced by `[redacted]`."""
    if not text:
        return text
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def forget_all() -> None:
    """Forget every registered secret (for tests)."""
    global _secrets
    _secrets = ()
