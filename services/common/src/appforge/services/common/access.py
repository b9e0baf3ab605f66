"""Who may call what: each service states one rule per RPC, and the server's edge applies it.

A rule names the roles that may make the call and the resource the request touches (the
field holding its id, and how to find that resource's team). A `user` or `service` caller
acts only for its teams: a resource of another team answers NOT_FOUND with the very words a
missing id gets, so ids leak nothing. A role that may not make the call answers
PERMISSION_DENIED; that depends on the call alone, never on the resource. An `admin` acts for
every team. The checks run before the handler: a refused call writes nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from google.protobuf import descriptor_pool

from appforge.services.common.auth import Principal, Role, Verifier, bearer
from appforge.services.common.errors import ConfigError, NotFound, PermissionDenied
from appforge.services.common.settings import Limits
from appforge.services.common.validation import require_id

ANYONE = frozenset(Role)
SYSTEM_ONLY = frozenset({Role.SERVICE, Role.ADMIN})

# A resource's id → its team; None when there is no such resource.
TeamLookup: TypeAlias = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True, kw_only=True)
class Resource:
    kind: str  # "app": the refusal says "app_id: no app 'x'", as the store does
    field: str  # the request field with the resource's id
    team_of: TeamLookup


@dataclass(frozen=True, kw_only=True)
class Rule:
    roles: frozenset[Role]
    resource: Resource


# By method name, as the proto declares it ("GetApp").
Rules: TypeAlias = Mapping[str, Rule]


async def the_team_itself(team_id: str) -> str | None:
    """For requests that name a team (CreateApp): the team is the resource."""
    return team_id


def missing_as_none(lookup: Callable[[str], Awaitable[str | None]]) -> TeamLookup:
    """A lookup that raises NotFound for a missing resource, as one that answers None."""

    async def team_of(resource_id: str) -> str | None:
        try:
            return await lookup(resource_id)
        except NotFound:
            return None

    return team_of


class TeamCache:
    """Teams of resources, the most recent `size` kept: a resource never changes team."""

    def __init__(self, size: int = 65_536) -> None:
        self._size = size
        self._teams: OrderedDict[str, str] = OrderedDict()

    def known(self, resource_id: str) -> str | None:
        team = self._teams.get(resource_id)
        if team is not None:
            self._teams.move_to_end(resource_id)
        return team

    def remember(self, resource_id: str, team_id: str) -> None:
        self._teams[resource_id] = team_id
        if len(self._teams) > self._size:
            self._teams.popitem(last=False)


class Remembered:
    """A lookup whose answers are kept (`TeamCache`); misses are asked again, as a missing
    id may be created later."""

    def __init__(self, lookup: TeamLookup, size: int = 65_536) -> None:
        self._lookup = lookup
        self._cache = TeamCache(size)

    async def __call__(self, resource_id: str) -> str | None:
        team = self._cache.known(resource_id)
        if team is None:
            team = await self._lookup(resource_id)
            if team is not None:
                self._cache.remember(resource_id, team)
        return team


def check_complete(service: str, rules: Rules) -> None:
    """Every RPC of `service` (as its descriptor declares them) has a rule, and every rule
    an RPC: a method added without one stops the server from starting."""
    methods = {m.name for m in descriptor_pool.Default().FindServiceByName(service).methods}
    missing, unknown = sorted(methods - set(rules)), sorted(set(rules) - methods)
    if missing or unknown:
        raise ConfigError(
            f"{service}: the rule table must name every RPC once "
            f"(no rule: {', '.join(missing) or '-'}; no such RPC: {', '.join(unknown) or '-'})"
        )


class Guard:
    """The token and the rule for each call of one server."""

    def __init__(self, verifier: Verifier, rules: Mapping[str, Rule], limits: Limits) -> None:
        self.verifier = verifier
        self.rules = dict(rules)  # by full method, "/appforge.chat.v1.ChatService/GetApp"
        self.limits = limits

    @classmethod
    def over(
        cls, verifier: Verifier, services: Iterable[tuple[str, Rules]], limits: Limits
    ) -> Guard:
        rules: dict[str, Rule] = {}
        for service, table in services:
            rules.update({f"/{service}/{method}": rule for method, rule in table.items()})
        return cls(verifier, rules, limits)

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal:
        return self.verifier.verify(bearer(metadata))

    async def authorize(self, method: str, request: Any, principal: Principal) -> None:
        rule = self.rules[method]
        if principal.role not in rule.roles:
            allowed = " or ".join(sorted(r.value for r in rule.roles))
            raise PermissionDenied(
                f"{method.rsplit('/', 1)[-1]} needs the role {allowed}; "
                f"the token's role is {principal.role.value}"
            )
        resource = rule.resource
        resource_id = require_id(getattr(request, resource.field), resource.field, self.limits)
        if principal.role is Role.ADMIN:
            return
        team = await resource.team_of(resource_id)
        if team is None or not principal.acts_for(team):
            # The words the store says for an id that does not exist.
            raise NotFound(f"no {resource.kind} {resource_id!r}", field=resource.field)
