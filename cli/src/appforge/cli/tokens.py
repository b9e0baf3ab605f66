"""The token the CLI calls with, and `appforge token`.

A token given (`--token`, `APPFORGE_TOKEN`) is used as it is. Otherwise the CLI mints its own
from a key it can read: the `APPFORGE_AUTH_*` key of its environment, or the secret
`appforge up` made in the data directory, so that `appforge build` works against `up` with
no flag. With neither, calls carry no token (a server started `--insecure` takes them).
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import re
from collections.abc import Sequence

from appforge.services.common import auth, secrets
from appforge.services.common.errors import ConfigError
from appforge.services.common.settings import Settings

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(raw: str) -> float:
    """Seconds from "90", "90s", "30m", "1h" or "7d"."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", raw)
    if match is None or float(match[1]) <= 0:
        raise ConfigError(
            f"--ttl must be a positive duration such as 90s, 30m, 1h or 7d, not {raw!r}"
        )
    return float(match[1]) * _UNITS[match[2] or "s"]


def signing(settings: Settings) -> auth.AuthSettings | None:
    """The key this CLI may sign with: its environment's, else the data directory's."""
    if settings.auth.enabled:
        return settings.auth
    local = auth.local_secret(settings.data_dir)
    if local is None:
        return None
    return dataclasses.replace(settings.auth, secret=local)


def subject() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a bare container
        return "cli"


def mint(
    settings: Settings,
    *,
    teams: Sequence[str],
    role: auth.Role,
    ttl: float,
    subject_name: str | None = None,
) -> str:
    """A token signed with the key `signing` finds; ConfigError naming the variables when
    there is none."""
    keys = signing(settings)
    if keys is None:
        raise ConfigError(
            f"no key to sign a token with: set {auth.SECRET} (or {auth.SECRET_FILE}) or "
            f"{auth.PRIVATE_KEY_FILE}, or run where `appforge up` keeps its data "
            f"({settings.data_dir / auth.LOCAL_SECRET} is missing)"
        )
    minter = keys.minter(subject_name or subject())
    assert minter is not None  # keys.enabled
    return minter.token(teams=teams, role=role, ttl=ttl)


def credentials(
    given: str | None,
    settings: Settings,
    *,
    teams: Sequence[str],
    role: auth.Role,
    ttl: float,
) -> auth.Metadata | None:
    """The `authorization` metadata of the CLI's calls, or None to send none."""
    token = given or os.environ.get(auth.TOKEN, "")
    if token:
        secrets.register(token)
        return auth.metadata_of(token)
    if signing(settings) is None:
        return None
    return auth.metadata_of(mint(settings, teams=teams, role=role, ttl=ttl))
