"""The deployer service's migration history, handed to `appforge migrate` and `serve`."""

from __future__ import annotations

from importlib import resources
from typing import Final

from appforge.services.common.migrate import SchemaHistory

HISTORY: Final = SchemaHistory(
    service="deployer", location=resources.files("appforge.services.deployer") / "migrations"
)
