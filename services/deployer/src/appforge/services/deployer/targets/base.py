"""What every deploy target provides, and how its failures are classified."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, kw_only=True)
class ArtifactFile:
    """One file of an app version: a relative, normalised path, its bytes and MIME type."""

    path: str
    content: bytes
    content_type: str


@dataclass(frozen=True, kw_only=True)
class Publication:
    """What a target reports after publishing a version."""

    url: str


class PublishError(Exception):
    """A publish attempt failed; `retryable` says whether another attempt may succeed.

    Retryable: timeouts, connection errors, HTTP 429 and 5xx. Not retryable:
    authentication, authorisation and validation errors (HTTP 4xx other than 429).
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Target(Protocol):
    """A place that can publish one version of an app, idempotently.

    `publish` may be cancelled at any point (the attempt's deadline) and called again for
    the same version by another worker; publishing a version that is already fully
    published must not publish it again (and must return the same URL).
    """

    name: str

    async def publish(
        self, *, app_id: str, app_version_id: str, files: Sequence[ArtifactFile]
    ) -> Publication: ...

    async def close(self) -> None: ...
