"""The deployer's own settings: targets, default policy, workers (APPFORGE_DEPLOY_*, S3)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from appforge.services.common.errors import ConfigError, InvalidArgument
from appforge.services.common.settings import read_count, read_seconds
from appforge.services.deployer.domain import TARGETS, Policy, WorkerConfig


@dataclass(frozen=True, kw_only=True)
class DeploySettings:
    """The deployer: targets, default policy, workers (APPFORGE_DEPLOY_*, APPFORGE_S3_*)."""

    target: str = "local"
    root: Path | None = None  # None: <data dir>/deploys
    http_port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    s3_endpoint_url: str = ""
    s3_bucket: str = ""
    s3_region: str = "us-east-1"
    s3_public_url: str = ""
    aws_access_key_id: str = ""
    aws_secret_access_key: str = field(default="", repr=False)
    policy: Policy = field(default_factory=Policy)  # the default of requests that set none
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    workers: int = 4

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DeploySettings:
        target = env.get("APPFORGE_DEPLOY_TARGET") or "local"
        if target not in TARGETS:
            raise ConfigError(
                f"APPFORGE_DEPLOY_TARGET must be one of {', '.join(TARGETS)}, got {target!r}"
            )
        http_port = read_count(env, "APPFORGE_DEPLOY_HTTP_PORT", 8080)
        root = env.get("APPFORGE_DEPLOY_ROOT")
        return cls(
            target=target,
            root=Path(root) if root else None,
            http_port=http_port,
            public_url=env.get("APPFORGE_DEPLOY_PUBLIC_URL") or f"http://127.0.0.1:{http_port}",
            s3_endpoint_url=env.get("APPFORGE_S3_ENDPOINT_URL", ""),
            s3_bucket=env.get("APPFORGE_S3_BUCKET", ""),
            s3_region=env.get("APPFORGE_S3_REGION") or "us-east-1",
            s3_public_url=env.get("APPFORGE_S3_PUBLIC_URL", ""),
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID", ""),
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY", ""),
            policy=_policy_from_env(env),
            worker=WorkerConfig(
                lease=read_seconds(env, "APPFORGE_DEPLOY_LEASE", _WORKER.lease),
                poll_interval=read_seconds(
                    env, "APPFORGE_DEPLOY_POLL_INTERVAL", _WORKER.poll_interval
                ),
            ),
            # 0: a replica that takes RPCs and leaves the work to the others.
            workers=read_count(env, "APPFORGE_DEPLOY_WORKERS", 4, minimum=0),
        )

    def serving_on(self, http_port: int) -> DeploySettings:
        """These settings with the HTTP server on `http_port`; a public URL that was only
        derived from the default port follows it, one set explicitly stays."""
        derived = self.public_url == f"http://127.0.0.1:{self.http_port}"
        return dataclasses.replace(
            self,
            http_port=http_port,
            public_url=f"http://127.0.0.1:{http_port}" if derived else self.public_url,
        )

    def root_under(self, data_dir: Path) -> Path:
        """Where the `local` target publishes: APPFORGE_DEPLOY_ROOT or <data dir>/deploys."""
        return self.root or (data_dir / "deploys")

    @property
    def s3_configured(self) -> bool:
        return bool(self.s3_bucket)


# The defaults live in the domain; the environment only overrides them.
_POLICY = Policy()
_WORKER = WorkerConfig()


def _policy_from_env(env: Mapping[str, str]) -> Policy:
    """The default deployment policy: APPFORGE_DEPLOY_* over the domain's defaults."""
    policy = Policy(
        attempt_timeout=read_seconds(
            env, "APPFORGE_DEPLOY_ATTEMPT_TIMEOUT", _POLICY.attempt_timeout
        ),
        max_attempts=read_count(env, "APPFORGE_DEPLOY_MAX_ATTEMPTS", _POLICY.max_attempts),
        initial_backoff=read_seconds(
            env, "APPFORGE_DEPLOY_INITIAL_BACKOFF", _POLICY.initial_backoff
        ),
        max_backoff=read_seconds(env, "APPFORGE_DEPLOY_MAX_BACKOFF", _POLICY.max_backoff),
    )
    try:
        return policy.validated()
    except InvalidArgument as exc:
        # Only max_backoff below initial_backoff gets here: the readers refuse the rest.
        raise ConfigError(
            "APPFORGE_DEPLOY_MAX_BACKOFF must not be below APPFORGE_DEPLOY_INITIAL_BACKOFF"
        ) from exc
