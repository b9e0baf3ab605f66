"""Deployer rules: backoff bounds, what follows a failed attempt, notices, artifacts."""

from __future__ import annotations

import random

import pytest

from appforge.services.common.errors import ConfigError, InvalidArgument, LimitExceeded
from appforge.services.deployer.artifacts import ArtifactLimits, normalise_path, validate_files
from appforge.services.deployer.domain import (
    US,
    AttemptOutcome,
    DeploymentStatus,
    Policy,
    WorkerConfig,
    after_failure,
    attempt_deadline_us,
    backoff_delay,
    final_notice,
)
from appforge.services.deployer.settings import DeploySettings

T0 = 1_800_000_000 * US
POLICY = Policy(attempt_timeout=10, max_attempts=4, initial_backoff=1, max_backoff=60)


@pytest.mark.parametrize(
    ("retry", "cap"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 32.0), (7, 60.0), (8, 60.0), (500, 60.0)],
    ids=lambda v: str(v),
)
def test_full_jitter_stays_within_the_exponential_cap(retry: int, cap: float) -> None:
    rng = random.Random(retry)
    delays = [backoff_delay(retry, POLICY, rng) for _ in range(2000)]
    assert all(0.0 <= d <= cap for d in delays)
    # Full jitter spreads over the whole range, not just near the cap.
    assert min(delays) < cap * 0.05 and max(delays) > cap * 0.95


def test_backoff_follows_the_policy_multiplier_and_cap() -> None:
    policy = Policy(initial_backoff=0.01, max_backoff=0.05, multiplier=3)
    rng = random.Random(1)
    assert max(backoff_delay(2, policy, rng) for _ in range(500)) <= 0.03
    assert max(backoff_delay(9, policy, rng) for _ in range(500)) <= 0.05


def test_retry_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        backoff_delay(0, POLICY, random.Random())


def _after(
    outcome: AttemptOutcome, attempts: int, policy: Policy = POLICY, now: int = T0
) -> tuple[DeploymentStatus, int | None]:
    step = after_failure(
        outcome=outcome,
        error="boom",
        attempts_made=attempts,
        policy=policy,
        created_us=T0,
        now_us=now,
        rng=random.Random(0),
    )
    return step.status, step.retry_at_us


@pytest.mark.parametrize(
    ("outcome", "attempts", "expected"),
    [
        (AttemptOutcome.FAILED_RETRYABLE, 1, DeploymentStatus.RETRY_WAIT),
        (AttemptOutcome.FAILED_RETRYABLE, 3, DeploymentStatus.RETRY_WAIT),
        (AttemptOutcome.FAILED_RETRYABLE, 4, DeploymentStatus.FAILED),
        (AttemptOutcome.TIMED_OUT, 1, DeploymentStatus.RETRY_WAIT),
        (AttemptOutcome.TIMED_OUT, 4, DeploymentStatus.TIMED_OUT),
        (AttemptOutcome.LOST, 2, DeploymentStatus.RETRY_WAIT),
        (AttemptOutcome.FAILED_PERMANENT, 1, DeploymentStatus.FAILED),
        (AttemptOutcome.CANCELLED, 1, DeploymentStatus.CANCELLED),
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_what_follows_a_failed_attempt(
    outcome: AttemptOutcome, attempts: int, expected: DeploymentStatus
) -> None:
    status, retry_at = _after(outcome, attempts)
    assert status is expected
    if expected is DeploymentStatus.RETRY_WAIT:
        assert retry_at is not None and T0 <= retry_at <= T0 + int(60 * US)
    else:
        assert retry_at is None


def test_the_overall_deadline_stops_retries() -> None:
    policy = Policy(
        attempt_timeout=1, max_attempts=10, initial_backoff=5, max_backoff=5, overall_deadline=3
    )
    late = T0 + 3 * US
    assert (
        _after(AttemptOutcome.FAILED_RETRYABLE, 1, policy, now=late)[0]
        is DeploymentStatus.TIMED_OUT
    )
    assert attempt_deadline_us(started_us=T0 + 2 * US, policy=policy, created_us=T0) == T0 + 3 * US
    assert attempt_deadline_us(started_us=T0, policy=policy, created_us=T0) == T0 + 1 * US


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attempt_timeout", 0),
        ("attempt_timeout", -1),
        ("initial_backoff", 0),
        ("max_backoff", 0),
        ("max_attempts", 0),
        ("overall_deadline", 0),
        ("max_backoff", 0.5),  # below initial_backoff (1)
    ],
)
def test_invalid_policies_name_their_field(field: str, value: float) -> None:
    policy = Policy(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as err:
        policy.validated()
    assert err.value.field == f"policy.{field}"


def test_notices_say_how_the_deployment_ended() -> None:
    deployed = final_notice(
        status=DeploymentStatus.SUCCEEDED, deployment_id="d", attempts=3, url="http://x/apps/a/"
    )
    assert not deployed.failed
    assert deployed.metadata == {
        "deployment_id": "d",
        "attempts": 3,
        "deployment_status": "deployed",
        "url": "http://x/apps/a/",
    }
    timeout = final_notice(status=DeploymentStatus.TIMED_OUT, deployment_id="d", attempts=4)
    assert timeout.failed
    assert timeout.metadata == {
        "deployment_id": "d",
        "attempts": 4,
        "error": "Deployment timeout",
        "deployment_status": "timeout",
    }
    failed = final_notice(
        status=DeploymentStatus.FAILED, deployment_id="d", attempts=1, error="s3 403 AccessDenied"
    )
    assert failed.metadata["error"] == "Deployment failed: s3 403 AccessDenied"
    assert failed.metadata["deployment_status"] == "failed"
    cancelled = final_notice(status=DeploymentStatus.CANCELLED, deployment_id="d", attempts=1)
    assert cancelled.failed and cancelled.metadata["deployment_status"] == "cancelled"
    with pytest.raises(ValueError):
        final_notice(status=DeploymentStatus.RUNNING, deployment_id="d", attempts=1)


LIMITS = ArtifactLimits(max_files=3, max_file_bytes=10, max_total_bytes=15, max_path_length=20)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("index.html", "index.html"),
        ("a/./b.js", "a/b.js"),
        ("a//b.css", "a/b.css"),
        ("dir/x", "dir/x"),
    ],
)
def test_paths_are_normalised(path: str, expected: str) -> None:
    assert normalise_path(path, "f", LIMITS) == expected


@pytest.mark.parametrize(
    "path",
    ["", "/etc/passwd", "../x", "a/../../x", "a/..", "..", "a\\b", "a\x00b", "x" * 21, ".", "a\nb"],
    ids=[
        "empty",
        "absolute",
        "parent",
        "escape",
        "trailing-parent",
        "dotdot",
        "backslash",
        "nul",
        "long",
        "dot",
        "newline",
    ],
)
def test_unsafe_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        normalise_path(path, "files[0].path", LIMITS)
    assert err.value.field == "files[0].path"


@pytest.mark.parametrize(
    ("files", "error", "field"),
    [
        ([], InvalidArgument, "files"),
        ([("a", 1), ("b", 1), ("c", 1), ("d", 1)], LimitExceeded, "files"),
        ([("a", 11)], LimitExceeded, "files[0].content"),
        ([("a", 8), ("b", 8)], LimitExceeded, "files"),
        ([("a", 1), ("./a", 1)], InvalidArgument, "files[1].path"),
        ([("a", 1), ("../b", 1)], InvalidArgument, "files[1].path"),
    ],
    ids=["none", "too-many", "too-large", "total", "duplicate", "traversal"],
)
def test_artifact_limits(files: list[tuple[str, int]], error: type[Exception], field: str) -> None:
    with pytest.raises(error) as err:
        validate_files(files, LIMITS)
    assert getattr(err.value, "field", None) == field


def test_a_valid_artifact_keeps_its_order() -> None:
    assert validate_files([("index.html", 5), ("js/app.js", 5)], LIMITS) == [
        "index.html",
        "js/app.js",
    ]


@pytest.mark.parametrize(("lease", "interval"), [(0.3, 0.1), (3, 1.0), (30, 2.0), (600, 2.0)])
def test_heartbeats_keep_the_lease_and_carry_cancels_quickly(lease: float, interval: float) -> None:
    assert WorkerConfig(lease=lease).heartbeat_interval == pytest.approx(interval)


def test_the_server_default_policy_is_the_domains_unless_the_environment_says_otherwise() -> None:
    assert DeploySettings().policy == DeploySettings.from_env({}).policy == Policy()
    assert DeploySettings.from_env({}).worker == WorkerConfig()
    tuned = DeploySettings.from_env(
        {"APPFORGE_DEPLOY_ATTEMPT_TIMEOUT": "12.5", "APPFORGE_DEPLOY_MAX_ATTEMPTS": "2"}
    ).policy
    assert (tuned.attempt_timeout, tuned.max_attempts) == (12.5, 2)
    assert tuned.max_backoff == Policy().max_backoff


def test_a_default_policy_that_cannot_work_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="APPFORGE_DEPLOY_MAX_BACKOFF"):
        DeploySettings.from_env(
            {"APPFORGE_DEPLOY_INITIAL_BACKOFF": "10", "APPFORGE_DEPLOY_MAX_BACKOFF": "5"}
        )
