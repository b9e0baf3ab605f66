"""A private CA and certificates signed by it, for tests of TLS and mutual TLS: made by the
code of `appforge keys` (one day valid).

Each leaf names `localhost` and 127.0.0.1 and may serve and be a client (both extended key
usages), as one service's certificate does when it serves and calls others.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from appforge.cli import keys


@dataclass(frozen=True, kw_only=True)
class Pki(keys.Pki):
    """The PEM files, and the environment that points at them."""

    def env(self, *, mutual: bool = False) -> dict[str, str]:
        """APPFORGE_TLS_* for a process that serves (and calls) with this leaf."""
        env = {
            "APPFORGE_TLS_CERT_FILE": str(self.cert),
            "APPFORGE_TLS_KEY_FILE": str(self.key),
            "APPFORGE_TLS_CA_FILE": str(self.ca),
        }
        if mutual:
            env["APPFORGE_TLS_CLIENT_CA_FILE"] = str(self.ca)
        return env


def make_pki(directory: Path, *, leaf: str = "appforge") -> Pki:
    """A new CA and one leaf signed by it, written under `directory`."""
    made = keys.write_pki(
        directory, valid=datetime.timedelta(days=1), leaf=leaf, ca_name="appforge test CA"
    )
    return Pki(ca=made.ca, cert=made.cert, key=made.key)
