"""Who may call each DeployerService RPC (`common/access.py` applies the table).

A deployment is an app's; the app's team is chat's to say (`AppTeams`): asked as the caller
for a Deploy, so a service token of another team finds no app, and as the system for the
deployments already made.
"""

from __future__ import annotations

import grpc

from appforge.services.common import auth
from appforge.services.common.access import (
    ANYONE,
    SYSTEM_ONLY,
    Remembered,
    Resource,
    Rule,
    Rules,
)
from appforge.services.common.app_teams import AppTeams
from appforge.services.common.errors import NotFound
from appforge.services.common.rpc import error_from_rpc
from appforge.services.deployer.service import DeployerService


def rules(service: DeployerService, teams: AppTeams) -> Rules:
    async def team_of_app(app_id: str) -> str | None:
        try:
            return await teams.team_of(app_id, auth.caller())
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise error_from_rpc(exc, "chat") from exc

    async def team_of_deployment(deployment_id: str) -> str | None:
        try:
            deployment = await service.get(deployment_id)
        except NotFound:
            return None
        return await team_of_app(deployment.app_id)

    app = Resource(kind="app", field="app_id", team_of=team_of_app)
    deployment = Resource(
        kind="deployment", field="deployment_id", team_of=Remembered(team_of_deployment)
    )
    return {
        # Publishing and cancelling are the system's: the builder deploys what it built.
        "Deploy": Rule(roles=SYSTEM_ONLY, resource=app),
        "GetDeployment": Rule(roles=ANYONE, resource=deployment),
        "WatchDeployment": Rule(roles=ANYONE, resource=deployment),
        "CancelDeployment": Rule(roles=SYSTEM_ONLY, resource=deployment),
    }
