"""The deploy-once key: one deploy request per execution, and the deployment it got."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.services.builder.tables import deploy_requests
from appforge.services.common.db import translate_errors, upsert_insert


class DeployQueries:
    """Claiming an execution's one Deploy call, and remembering its answer."""

    engine: AsyncEngine

    async def claim_deploy(self, execution_id: str, app_version_id: str, now_us: int) -> bool:
        """True for exactly one caller per execution: the one that may call Deploy."""
        async with translate_errors("claiming the deployment"), self.engine.begin() as conn:
            inserted = await conn.execute(
                upsert_insert(self.engine, deploy_requests)
                .values(
                    execution_id=execution_id, app_version_id=app_version_id, requested_us=now_us
                )
                .on_conflict_do_nothing(index_elements=["execution_id"])
                .returning(deploy_requests.c.execution_id)
            )
            return inserted.first() is not None

    async def record_deployment(self, execution_id: str, deployment_id: str) -> None:
        """The deployer's id for the execution's deployment."""
        async with translate_errors("recording the deployment"), self.engine.begin() as conn:
            await conn.execute(
                deploy_requests.update()
                .where(deploy_requests.c.execution_id == execution_id)
                .values(deployment_id=deployment_id)
            )
