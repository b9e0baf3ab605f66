"""Every query the builder runs, one module per concept: executions (and their flows'
ordering state), tool calls, app versions, the deploy-once key, the final-notice outbox.
`ExecutionStore` is all of them over one engine."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.services.builder.store.calls import CallQueries
from appforge.services.builder.store.deploys import DeployQueries
from appforge.services.builder.store.executions import ExecutionQueries
from appforge.services.builder.store.notices import NoticeQueries
from appforge.services.builder.store.versions import VersionQueries
from appforge.services.common.db import standalone

__all__ = ["ExecutionStore"]


class ExecutionStore(ExecutionQueries, CallQueries, VersionQueries, DeployQueries, NoticeQueries):
    """Executions, the ordering state of their flows, tool calls, versions, deploy keys and
    final notices, in the builder's tables."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.statements = standalone(engine)
