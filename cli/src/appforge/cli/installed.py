"""Which services this environment carries: an image of one service installs the CLI with that
service alone (`pip install ./cli ./services/chat …`), so every command that runs a service
asks here first and says what is missing rather than failing on an import."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from appforge.services.common.errors import FailedPrecondition

if TYPE_CHECKING:  # at run time only `histories` needs it, and it brings in Alembic
    from appforge.services.common.migrate import SchemaHistory

SERVICES: Final = ("chat", "builder", "deployer")


def is_installed(service: str) -> bool:
    """Whether `appforge.services.<service>` can be imported here."""
    try:
        return importlib.util.find_spec(f"appforge.services.{service}") is not None
    except ModuleNotFoundError:  # not even the namespace appforge.services
        return False


def require(*services: str) -> None:
    """Refuse, naming the distribution to install, when a service is not installed."""
    missing = [s for s in services if not is_installed(s)]
    if missing:
        packages = " ".join(f"appforge-{s}" for s in missing)
        raise FailedPrecondition(
            f"the {', '.join(missing)} service{'s are' if len(missing) > 1 else ' is'} "
            f"not installed in this environment (install {packages})"
        )


def histories(services: Sequence[str] = SERVICES) -> list[SchemaHistory]:
    """The migration histories of the named services (each must be installed)."""
    require(*services)
    return [
        importlib.import_module(f"appforge.services.{service}.schema").HISTORY
        for service in services
    ]


def installed_histories() -> list[SchemaHistory]:
    """The migration histories of every service installed here (what `appforge migrate` runs)."""
    return histories([s for s in SERVICES if is_installed(s)])


def the_one_service() -> str:
    """The service installed here when it is the only one (an image of one service)."""
    present = [s for s in SERVICES if is_installed(s)]
    if len(present) != 1:
        found = ", ".join(present) or "none"
        raise FailedPrecondition(
            f"name a service ({', '.join(SERVICES)}): this environment has {found} installed"
        )
    return present[0]
