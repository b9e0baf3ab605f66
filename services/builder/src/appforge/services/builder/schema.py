"""The builder service's migration history, handed to `appforge migrate` and `serve`."""

from __future__ import annotations

from importlib import resources
from typing import Final

from appforge.services.common.migrate import SchemaHistory

HISTORY: Final = SchemaHistory(
    service="builder", location=resources.files("appforge.services.builder") / "migrations"
)
