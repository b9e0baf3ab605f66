"""Who may call each BuilderService RPC (`common/access.py` applies the table).

Every resource is an app's; its team is chat's to say. The app of a Build is looked up as
the caller (`GrpcChat.team_of` forwards who is asking), so a Build never learns of an app
its caller could not read.
"""

from __future__ import annotations

from appforge.services.builder.ports import ChatPort
from appforge.services.builder.store import ExecutionStore
from appforge.services.common.access import (
    ANYONE,
    Remembered,
    Resource,
    Rule,
    Rules,
    missing_as_none,
)


def rules(store: ExecutionStore, chat: ChatPort) -> Rules:
    app_team = Remembered(missing_as_none(chat.team_of))

    async def team_of_execution(execution_id: str) -> str | None:
        return await app_team((await store.get(execution_id)).app_id)

    async def team_of_version(version_id: str) -> str | None:
        return await app_team((await store.version(version_id)).app_id)

    app = Resource(kind="app", field="app_id", team_of=app_team)
    execution = Resource(
        kind="execution",
        field="execution_id",
        team_of=Remembered(missing_as_none(team_of_execution)),
    )
    version = Resource(
        kind="app version",
        field="app_version_id",
        team_of=Remembered(missing_as_none(team_of_version)),
    )
    return {
        "Build": Rule(roles=ANYONE, resource=app),
        "GetExecution": Rule(roles=ANYONE, resource=execution),
        "CancelExecution": Rule(roles=ANYONE, resource=execution),
        "GetAppVersion": Rule(roles=ANYONE, resource=version),
    }
