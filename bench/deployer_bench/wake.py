"""`--mode wake`: how soon a Deploy sent to a replica whose workers are all busy starts on
another replica, against the same Deploys sent to the replica that has the free workers
(woken in its own process), in the same run.

Two deployer processes share a fresh database, chat and Redis. Replica A runs one worker,
held busy for the whole run by a deployment to the s3 target whose endpoint (a socket of
this bench) accepts and never answers; replica B runs `--workers` workers and starts only
once A's worker is in that publish, so B cannot have taken it. Both poll every `POLL_S`:
a pickup below that is a wake-up, not a poll. Then `--deployments` Deploys of the one-file
artifact to the noop target go to A, one every `PACE_S`, and as many to B. For each side:
pickup (a deployment's `created_us` to its first attempt's `started_us`) p50/p95/p99/max.
Checked: every one SUCCEEDED with one attempt, and every attempt ran on B. The target: a
Deploy on the busy replica starts elsewhere in under `TARGET_P99_MS` at p99.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import asyncpg
from google.protobuf import duration_pb2
from harness import (
    CALL_TIMEOUT_S,
    BenchError,
    bench_database,
    free_port,
    log,
    running,
)

from appforge.api.deployer.v1 import deployer_pb2

from .artifact import minimal_artifact
from .config import BenchConfig
from .load import deploy_request
from .phase import deployer_child, deployer_stub, start_chat
from .results import Latency
from .tables import SUCCEEDED, deployment_rows, wait_ended

POLL_S = 60.0  # both replicas' poll: far above any wake-up
PACE_S = 0.02  # one Deploy every 20 ms: well below what B's workers take
TARGET_P99_MS = 100.0
HUNG_ATTEMPT_S = 3_600  # the busy worker's deployment outlives the run


class SilentEndpoint:
    """A TCP server that accepts connections and reads, never answering: an S3 endpoint
    whose every request hangs until the client gives up."""

    def __init__(self) -> None:
        self.accepted = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.set()
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()


async def _paced(stub: Any, app_id: str, prefix: str, count: int) -> dict[str, tuple[int, int]]:
    """`count` noop Deploys to `stub`, one every PACE_S (a slow reply does not delay the
    next); each version id queued, with how long its Deploy call took and when its reply
    came (wall clock, µs: the same clock as the deployers' stamps on this machine)."""
    artifact = minimal_artifact()

    async def deploy(n: int) -> tuple[str, tuple[int, int]]:
        request = deploy_request(app_id, artifact, prefix, n)
        sent = time.perf_counter_ns()
        await stub.Deploy(request, timeout=CALL_TIMEOUT_S)
        elapsed_us = (time.perf_counter_ns() - sent) // 1000
        return request.app_version_id, (elapsed_us, time.time_ns() // 1000)

    calls = []
    start = time.perf_counter()
    for n in range(count):
        calls.append(asyncio.create_task(deploy(n)))
        await asyncio.sleep(max(0.0, start + (n + 1) * PACE_S - time.perf_counter()))
    return dict(await asyncio.gather(*calls))


def _side(
    rows: list[asyncpg.Record], calls: dict[str, tuple[int, int]], worker_pid: int | None
) -> dict[str, Any]:
    """One side's pickups, Deploy call times and checks, from its deployments' rows."""
    mine = [r for r in rows if str(r["app_version_id"]) in calls]
    problems = []
    if len(mine) != len(calls):
        problems.append(f"{len(calls) - len(mine)} of {len(calls)} Deploys left no row")
    if any(r["status"] != SUCCEEDED or r["attempts"] != 1 for r in mine):
        problems.append("not every deployment succeeded with one attempt")
    elsewhere = [r for r in mine if str(r["worker_id"]).rsplit(":", 2)[1] != str(worker_pid)]
    if elsewhere:
        problems.append(f"{len(elsewhere)} attempts ran on another replica than B")
    waits = {str(r["app_version_id"]): int(r["started_us"]) - int(r["created_us"]) for r in mine}
    slowest = sorted(waits.items(), key=lambda item: -item[1])[:5]
    return {
        "deployments": len(mine),
        "pickup": asdict(Latency.of(list(waits.values()))),
        "deploy_call": asdict(Latency.of([call for call, _ in calls.values()])),
        # From the reply to the start: what the wake-up adds once the Deploy committed
        # (negative when the attempt started before the reply reached this client).
        "after_reply": asdict(
            Latency.of([int(r["started_us"]) - calls[r["app_version_id"]][1] for r in mine])
        ),
        # The slowest pickups, with their Deploy call: a slow commit delays the wake-up too.
        "slowest": [
            {"version": v, "pickup_ms": us / 1000, "deploy_call_ms": calls[v][0] / 1000}
            for v, us in slowest
        ],
        "problems": problems,
    }


async def run_wake(config: BenchConfig, workdir: Path) -> dict[str, Any]:
    """Both sides on one pair of replicas (see the module's docstring)."""
    root = workdir / "root-wake"
    root.mkdir()
    silent = SilentEndpoint()
    async with (
        bench_database(config.admin_dsn) as dsn,
        contextlib.AsyncExitStack() as stack,
        silent as s3_url,
    ):
        env, _chat, app_id = await start_chat(stack, config, dsn, root, workdir, "wake")
        env = {**env, "APPFORGE_DEPLOY_POLL_INTERVAL": str(POLL_S)}
        busy_env = {
            **env,
            "APPFORGE_DEPLOY_WORKERS": "1",
            "APPFORGE_S3_ENDPOINT_URL": s3_url,
            "APPFORGE_S3_BUCKET": "never-answers",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
        }
        busy, busy_address = deployer_child(
            "deployer-busy", (free_port(), free_port()), busy_env, workdir
        )
        await stack.enter_async_context(running(busy, busy_address))
        busy_stub = await deployer_stub(stack, busy_address)
        hung = duration_pb2.Duration(seconds=HUNG_ATTEMPT_S)
        await busy_stub.Deploy(
            deployer_pb2.DeployRequest(
                app_id=app_id,
                app_version_id="hung",
                execution_id="hung",
                files=minimal_artifact().files("hung"),
                target=deployer_pb2.DEPLOY_TARGET_S3,
                policy=deployer_pb2.DeploymentPolicy(attempt_timeout=hung, max_attempts=1),
            ),
            timeout=CALL_TIMEOUT_S,
        )
        try:
            await asyncio.wait_for(silent.accepted.wait(), 30)
        except TimeoutError:
            raise BenchError("the busy replica's worker never reached the silent S3") from None
        free, free_address = deployer_child(
            "deployer-free", (free_port(), free_port()), env, workdir
        )
        await stack.enter_async_context(running(free, free_address))
        free_stub = await deployer_stub(stack, free_address)
        log(f"wake: busy replica pid {busy.pid}, free replica pid {free.pid}, app {app_id}")

        via_busy = await _paced(busy_stub, app_id, "via-busy", config.deployments)
        direct = await _paced(free_stub, app_id, "direct", config.deployments)
        conn = await asyncpg.connect(dsn, timeout=10)
        stack.push_async_callback(conn.close)
        # + the hung one, which never ends: wait for the others.
        await wait_ended(conn, app_id, len(via_busy) + len(direct), [busy, free])
        rows = await deployment_rows(conn, app_id)
    sides = {
        "via_busy_replica": _side(rows, via_busy, free.pid),
        "direct": _side(rows, direct, free.pid),
    }
    p99 = sides["via_busy_replica"]["pickup"]["p99_ms"]
    direct_p99 = sides["direct"]["pickup"]["p99_ms"]
    problems = [f"{name}: {p}" for name, side in sides.items() for p in side["problems"]]
    return {
        "config": {
            "mode": "wake",
            "deployments": config.deployments,
            "workers_per_process": config.workers,
            "pace_ms": PACE_S * 1000,
            "poll_interval_s": POLL_S,
        },
        **sides,
        "p99_ratio_to_direct": p99 / direct_p99 if direct_p99 else 0.0,
        "target_p99_ms": TARGET_P99_MS,
        "target_met": p99 < TARGET_P99_MS,
        "problems": problems,
        "correct": not problems,
    }


def render_wake(result: dict[str, Any]) -> str:
    """The human-readable report of `--mode wake`."""
    cfg = result["config"]
    lines = [
        f"deployer wake-up: {cfg['deployments']:,} noop Deploys to each side, one every "
        f"{cfg['pace_ms']:g} ms; both replicas poll every {cfg['poll_interval_s']:g} s,",
        f"the busy one's only worker is held in a publish that never ends; the free one runs "
        f"{cfg['workers_per_process']} workers",
        "",
        f"{'':38}{'pickup ms: p50 / p99 / max':>28}{'Deploy call p99':>17}{'after reply p99':>17}",
    ]
    for label, key in (
        ("Deploy to the busy replica, run on B", "via_busy_replica"),
        ("Deploy to B itself (baseline)", "direct"),
    ):
        side = result[key]
        p = side["pickup"]
        pickup = f"{p['p50_ms']:.1f} / {p['p99_ms']:.1f} / {p['max_ms']:.1f}"
        lines.append(
            f"{label:38}{pickup:>28}{side['deploy_call']['p99_ms']:>17.1f}"
            f"{side['after_reply']['p99_ms']:>17.1f}"
        )
    lines.append(f"{'p99 ratio busy-replica / baseline':38}{result['p99_ratio_to_direct']:.2f}")
    met = "met" if result["target_met"] else "MISSED"
    lines.append(f"target: p99 via the busy replica < {result['target_p99_ms']:g} ms: {met}")
    lines.extend(f"PROBLEM: {p}" for p in result["problems"])
    return "\n".join(lines)
