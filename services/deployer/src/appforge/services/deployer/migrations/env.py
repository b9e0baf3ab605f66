"""Alembic environment of the deployer's migrations."""

from __future__ import annotations

from alembic import context

from appforge.services.common.migrate import run_env

run_env(context)  # type: ignore[arg-type]
