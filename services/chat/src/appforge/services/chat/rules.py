"""Who may call each ChatService RPC (`common/access.py` applies the table)."""

from __future__ import annotations

from appforge.services.chat.service import ChatService
from appforge.services.common.access import (
    ANYONE,
    SYSTEM_ONLY,
    Remembered,
    Resource,
    Rule,
    Rules,
    missing_as_none,
    the_team_itself,
)


def rules(service: ChatService) -> Rules:
    async def team_of_app(app_id: str) -> str:
        return (await service.get_app(app_id)).team_id

    app_team = Remembered(missing_as_none(team_of_app))

    async def team_of_message(message_id: str) -> str | None:
        return await app_team((await service.get_message(message_id)).app_id)

    async def team_of_execution(execution_id: str) -> str | None:
        return await app_team((await service.get_message_by_execution(execution_id)).app_id)

    app = Resource(kind="app", field="app_id", team_of=app_team)
    message = Resource(
        kind="message", field="message_id", team_of=Remembered(missing_as_none(team_of_message))
    )
    by_execution = Resource(
        kind="message for execution",
        field="execution_id",
        team_of=Remembered(missing_as_none(team_of_execution)),
    )
    team = Resource(kind="team", field="team_id", team_of=the_team_itself)
    return {
        "CreateApp": Rule(roles=ANYONE, resource=team),
        "GetApp": Rule(roles=ANYONE, resource=app),
        "PostUserMessage": Rule(roles=ANYONE, resource=app),
        # The assistant's message is written by the builder and the deployer, never a user.
        "UpsertAssistantMessage": Rule(roles=SYSTEM_ONLY, resource=app),
        "GetMessage": Rule(roles=ANYONE, resource=message),
        "GetMessageByExecution": Rule(roles=ANYONE, resource=by_execution),
        "ListMessages": Rule(roles=ANYONE, resource=app),
        "WatchApp": Rule(roles=ANYONE, resource=app),
    }
