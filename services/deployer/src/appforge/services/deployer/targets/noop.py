"""The `noop` target: publishes nothing and succeeds, so the queue can be measured alone.

A deployment to it goes through everything else a deployment does (the claim and its
lease, the attempt's deadline and heartbeat, the recorded end, the outbox notice to
chat): only the publish itself costs nothing. `bench/deployer.py --mode noop` uses it to
compare the deployer's queue with another job queue's no-op jobs. Selected as the server's
default with `APPFORGE_DEPLOY_TARGET=noop` (the API has no enum value for it: a Deploy that
names no target gets the default).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from appforge.services.deployer.targets.base import ArtifactFile, Publication


class NoopTarget:
    """Publishes nothing; every publish succeeds at once with `noop://<app>/<version>`.

    The URL names what would have been published, so a notice still says which version a
    deployment was; nothing serves it.
    """

    name: str = "noop"

    def url_for(self, app_id: str, app_version_id: str) -> str:
        return f"noop://{quote(app_id, safe='')}/{quote(app_version_id, safe='')}"

    async def publish(
        self, *, app_id: str, app_version_id: str, files: Sequence[ArtifactFile]
    ) -> Publication:
        return Publication(url=self.url_for(app_id, app_version_id))

    async def close(self) -> None:
        return None
