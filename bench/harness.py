"""What the benches share: child processes, readiness, bench databases, CPU samples, py-spy.

Imported as `harness` by the scripts in this folder (run them as `python bench/NAME.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

CALL_TIMEOUT_S = 30.0


READY_TIMEOUT_S = 30.0


STOP_GRACE_S = 10.0


MIGRATE_TIMEOUT_S = 120.0
# A bench measures what the system sustains, not its admission limits: every bench build is
# of one team, "bench", and a builder's own cap must not cut the load a bench offers.
UNCAPPED_BUILDS = {
    "APPFORGE_TEAM_MAX_RUNNING_BUILDS": "100000",
    "APPFORGE_BUILDER_MAX_RUNNING": "100000",
}


def free_port() -> int:
    """A TCP port nobody listens on right now (the child fails fast if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_stat(stat_path: Path) -> tuple[str, list[str]] | None:
    """(command name, the fields after it) of a /proc/<pid>[/task/<tid>]/stat file; the
    fields are numbered from 0 = state, so 1 is the parent pid, 11 and 12 utime and stime."""
    try:
        raw = stat_path.read_text()
    except OSError:
        return None
    return raw[raw.find("(") + 1 : raw.rfind(")")], raw[raw.rfind(")") + 2 :].split()


def stat_cpu_s(fields: Sequence[str]) -> float:
    """User+system CPU seconds, from the fields `proc_stat` returns."""
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _proc_cpu_s(stat_path: Path) -> tuple[str, float] | None:
    """(command name, user+system CPU seconds of all its threads), from /proc/<pid>/stat."""
    found = proc_stat(stat_path)
    return None if found is None else (found[0], stat_cpu_s(found[1]))


def pid_cpu_s(pid: int | None, *, main_thread: bool = False) -> float | None:
    """User+system CPU seconds of a process, or of its main thread (where its asyncio event
    loop runs); None when there is no pid or /proc does not tell."""
    if not pid:
        return None
    path = Path(f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat")
    found = _proc_cpu_s(path)
    return found[1] if found else None


def command_cpu_s(command: str) -> float:
    """User+system CPU seconds of every process named `command` (say `postgres`), summed;
    a process that exits between two samples drops out of the second."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        found = _proc_cpu_s(stat)
        if found is not None and found[0] == command:
            total += found[1]
    return total


CHANNEL_OPTIONS = [
    # Reconnect quickly while a child is still binding its port (the default backoff is 1s).
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
]


class Child:
    """A server process the bench owns: started, awaited ready, stopped, killed on error."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        # Several children of one kind run at once: no fixed metrics ports. Tokens unchecked:
        # the benches' clients carry none, and each bench compares against a baseline
        # measured the same way.
        self.env = {"APPFORGE_METRICS_PORT": "0", "APPFORGE_INSECURE": "true", **env}
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def wait_serving(self, address: str, timeout: float) -> None:
        """Return once the health service says SERVING; fail if the child dies or is slow."""
        assert self.proc is not None
        async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            watch = asyncio.ensure_future(_until_serving(channel))
            exited = asyncio.ensure_future(self.proc.wait())
            try:
                done, _ = await asyncio.wait(
                    {watch, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (watch, exited):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                        await task
        if watch in done and not watch.cancelled() and watch.exception() is None:
            return
        if exited in done:
            raise BenchError(f"{self.name} exited with {self.proc.returncode} before serving")
        raise BenchError(f"{self.name} not SERVING on {address} after {timeout:.0f}s")

    async def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        return proc.returncode

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def serve_child(name: str, port: int, env: dict[str, str], logs: Path, *extra: str) -> Child:
    """`appforge serve NAME` on 127.0.0.1:`port`, logging to `logs/NAME.log`."""
    argv = [*appforge_command(), "serve", name, "--host", "127.0.0.1", "--port", str(port)]
    return Child(name, [*argv, *extra], env, logs / f"{name}.log")


async def _until_serving(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="")
    async for reply in stub.Watch(request, wait_for_ready=True):
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return


@contextlib.asynccontextmanager
async def running(child: Child, address: str) -> AsyncIterator[Child]:
    """A started, SERVING child, stopped (or killed) on the way out whatever happens."""
    try:
        await child.start()
        await child.wait_serving(address, READY_TIMEOUT_S)
        yield child
    except BaseException:
        log(f"--- last lines of {child.name}'s log ({child.log}) ---\n{child.log_tail()}")
        raise
    finally:
        status = await child.stop()
        log(f"{child.name} stopped (exit status {status})")


class BenchError(Exception):
    """The bench could not measure (setup failed, a child died, the queue stalled)."""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def appforge_command() -> list[str]:
    """The `appforge` entry point of this virtualenv, else the module."""
    beside = Path(sys.executable).with_name("appforge")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("appforge")
    return [found] if found else [sys.executable, "-m", "appforge.cli"]


async def run_command(argv: Sequence[str], env: dict[str, str], timeout: float) -> str:
    """Run a command to completion; its output, or BenchError when it fails."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited with {proc.returncode}:\n{text}")
    return text


def _dsn_with_database(dsn: str, database: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{database}"


@contextlib.asynccontextmanager
async def bench_database(admin_dsn: str) -> AsyncIterator[str]:
    """A fresh database for this configuration (its asyncpg DSN), dropped on the way out."""
    name = f"appforge_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    log(f"created database {name}")
    try:
        yield _dsn_with_database(admin_dsn, name)
    finally:
        admin = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        log(f"dropped database {name}")


class PySpy:
    """`py-spy record` attached to a pid during the measured phase, raw (collapsed) output."""

    def __init__(self, out: Path, pid: int) -> None:
        self.out = out
        self.pid = pid
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        exe = py_spy_command()
        if exe is None:
            raise BenchError("py-spy is not installed (pip install py-spy)")
        self.proc = await asyncio.create_subprocess_exec(
            exe,
            *("record", "--pid", str(self.pid), "--format", "raw", "--rate", "250"),
            *("--output", str(self.out), "--nonblocking", "--threads"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


def py_spy_command() -> str | None:
    """The py-spy executable, if installed (in this virtualenv or on PATH)."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


# py-spy names a file by its path below the sys.path entry it came from: the workspace's
# members show as `(chat/store/pg_writer.py:12)`, `(common/server.py:80)`, ...
APPFORGE_FRAMES = ("(chat/", "(builder/", "(deployer/", "(common/", "(api/", "(appforge/")


def _frame_package(frame: str) -> str:
    """`fn (sqlalchemy/sql/elements.py:12)` -> `sqlalchemy`."""
    where = frame[frame.rfind("(") + 1 :]
    return where.split("/", 1)[0] if "/" in where else "(native/other)"


def summarise_collapsed(path: Path, top: int = 15) -> str:
    """Where the profiled process's samples are: own time by package, appforge frames inclusive."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        threads["main" if "MainThread" in frames[0] else "other threads"] += count
        own[_frame_package(frames[-1])] += count
        for frame in set(frames):
            if any(part in frame for part in APPFORGE_FRAMES):
                inclusive[frame] += count
    if total == 0:
        return "py-spy: no samples"
    rows = [f"py-spy: {total} samples of the profiled process (not idle)"]
    rows.append(
        "  by thread: " + ", ".join(f"{k} {100 * n / total:.0f}%" for k, n in threads.items())
    )
    rows.append("  own time by package:")
    rows += [f"    {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(8)]
    rows.append("  appforge frames, inclusive:")
    rows += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(rows)


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """--admin-dsn and --redis-url: the PostgreSQL and Redis every bench runs on."""
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="asyncpg DSN of a database to run CREATE/DROP DATABASE from",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )


def add_output_options(parser: argparse.ArgumentParser, *, check: bool = True) -> None:
    """--json, and (with `check`) --check."""
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    if check:
        parser.add_argument("--check", action="store_true", help="exit 3 when a target is missed")


def add_service_options(parser: argparse.ArgumentParser, *, profiled: str) -> None:
    """--log-level, --logs DIR and --py-spy DIR (`profiled`: when the profiles are taken)."""
    parser.add_argument("--log-level", default="WARNING", help="APPFORGE_LOG_LEVEL of the services")
    parser.add_argument(
        "--logs", type=Path, default=None, metavar="DIR", help="keep the services' logs in DIR"
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"profile chat and the builder {profiled} into DIR/chat.txt and DIR/builder.txt "
        "(needs py-spy)",
    )


def prepare_dirs(logs: Path | None, py_spy: Path | None) -> int | None:
    """Create the --logs and --py-spy folders; 2 (after saying why) when --py-spy is asked
    for and py-spy is not installed, None when all is ready."""
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
    if py_spy is not None:
        if py_spy_command() is None:
            print("--py-spy needs py-spy: pip install py-spy", file=sys.stderr)
            return 2
        py_spy.mkdir(parents=True, exist_ok=True)
    return None


def print_profiles(py_spy: Path | None, labels: Sequence[str] = ("chat", "builder")) -> None:
    """The summary of each profile written under --py-spy (`<label>.txt`)."""
    if py_spy is None:
        return
    for label in labels:
        profile = py_spy / f"{label}.txt"
        if profile.exists():
            print(f"\n{label}: {summarise_collapsed(profile)}")


def run_services_bench(
    prefix: str,
    run: Callable[[Path], Coroutine[Any, Any, dict[str, Any]]],
    *,
    logs: Path | None,
    py_spy: Path | None,
    as_json: bool,
    check: bool,
    render: Callable[[dict[str, Any]], str],
    missed: Callable[[dict[str, Any]], bool],
) -> int:
    """A bench of the services as processes, from its parsed options to its exit status:
    the --logs and --py-spy folders, `run` in a work folder of its own, the report and the
    profiles, and 3 with `check` when `missed` says a target was."""
    if (refused := prepare_dirs(logs, py_spy)) is not None:
        return refused
    result = run_and_report(in_workdir(prefix, run), as_json=as_json, render=render, py_spy=None)
    if isinstance(result, int):
        return result
    if not as_json:
        print_profiles(py_spy)
    return 3 if check and missed(result) else 0


def run_and_report(
    main: Coroutine[Any, Any, dict[str, Any]],
    *,
    as_json: bool,
    render: Callable[[dict[str, Any]], str],
    py_spy: Path | None,
) -> dict[str, Any] | int:
    """Run a bench's main coroutine and print its result; an exit status if it failed."""
    try:
        result = asyncio.run(main)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
    print(json.dumps(result, indent=2) if as_json else render(result))
    if py_spy and py_spy.exists() and not as_json:
        print()
        print(summarise_collapsed(py_spy))
    return result


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return float(sorted_values[rank - 1])


def machine_ticks() -> list[int]:
    """user, nice, system, idle, iowait, irq, softirq, steal: from the first /proc/stat line."""
    try:
        with open("/proc/stat") as stat:
            return [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return [0] * 8


def machine_shares(before: Sequence[int], after: Sequence[int]) -> dict[str, float]:
    """Shares of all the machine's CPU time between two `machine_ticks` samples: busy (user,
    nice, system, irq, softirq), iowait, steal, idle."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        b - a for a, b in zip(before, after, strict=True)
    )
    total = max(1, user + nice + system + idle + iowait + irq + softirq + steal)
    return {
        "busy": (user + nice + system + irq + softirq) / total,
        "iowait": iowait / total,
        "steal": steal / total,
        "idle": idle / total,
    }


async def in_workdir(
    prefix: str, run: Callable[[Path], Awaitable[dict[str, Any]]], keep: Path | None = None
) -> dict[str, Any]:
    """`run(workdir)` in a temporary directory (or `keep`, left in place), with SIGTERM
    taking the same way out as Ctrl-C: cancel, so every `finally` runs."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        return await run(keep)
    with tempfile.TemporaryDirectory(prefix=prefix) as workdir:
        return await run(Path(workdir))
