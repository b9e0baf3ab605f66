"""The secret values this process was given, and their removal from whatever it lets out.

A secret can reach text the process emits without anyone logging it on purpose: an endpoint
that echoes the API key in its error body (the error then goes to a log line, to the
assistant message's `error`, to a client's status details), a traceback of a failed
connection that prints its URL. So every log line, every status detail and every error the
builder writes into a message passes through `redact`, which replaces each registered value
with `[redacted]`. The values come from the environment (`register_env`) at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
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

_secrets: set[str] = set()


def register(value: str) -> None:
    """Treat `value` as a secret from now on (ignored when shorter than MIN_LENGTH)."""
    if len(value) >= MIN_LENGTH:
        _secrets.add(value)


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
    """`text` with every registered secret replaced by `[redacted]`."""
    if not _secrets or not text:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):  # a secret inside another: both go
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_value(value: Any) -> Any:
    """`redact` over every string of a JSON-like value (dicts, lists, scalars)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(item) for item in value]
    return value


def forget_all() -> None:
    """Forget every registered secret (for tests)."""
    _secrets.clear()
