"""The README's "first five minutes", run as written: every `$ ` command of that section, in order,
with its answer checked.

`make run` is started as the README says; Make takes `VENV` from the environment (`VENV ?= .venv`),
so it runs this test's virtualenv, which is `.venv` itself under `make test`. The activation line
is run against that same virtualenv. The example ids in the README are replaced by the ones this
run printed. The services listen on the README's default ports (50051-50053, 8080, 9050).
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## The first five minutes"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def readme_commands() -> list[str]:
    """The `$ ` lines of the section, in order, without their trailing comments."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    commands = []
    for line in section.splitlines():
        if line.startswith("$ "):
            commands.append(re.split(r"\s{2,}#", line[2:], maxsplit=1)[0].strip())
    return commands


def _lines_until(process: subprocess.Popen[bytes], marker: str, timeout: float) -> list[str]:
    """What `process` wrote to stderr up to the line holding `marker` (fails after `timeout`).

    Reads the pipe's bytes as they come (a buffered readline could hold back lines that
    arrived in one write, and the selector would never wake for them)."""
    assert process.stderr is not None
    fd = process.stderr.fileno()
    deadline = time.monotonic() + timeout
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while marker.encode() not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or process.poll() is not None:
                pytest.fail(f"no {marker!r} from `make run` within {timeout} s:\n{seen.decode()}")
            if selector.select(left):
                seen += os.read(fd, 65536)
    return seen.decode().splitlines()


@pytest.fixture
def make_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    """`make run`, as written, until its banner; the command and the banner's lines.

    Its data directory is the test's own, and the later commands look there too (as they
    would in the same folder): the CLI finds the signing secret `up` made in it.
    """
    commands = readme_commands()
    assert commands[0] == "make run", commands
    monkeypatch.setenv("APPFORGE_DATA_DIR", str(tmp_path / "data"))
    env = {**os.environ, "VENV": sys.prefix}
    process = subprocess.Popen(
        ["bash", "-c", commands[0]],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # Ctrl-C reaches make and appforge up alike
    )
    drain: threading.Thread | None = None
    try:
        banner = _lines_until(process, "Ctrl-C to stop", timeout=180)
        # Keep reading what it logs from here on, or a full pipe would stall the services.
        assert process.stderr is not None
        stderr = process.stderr
        drain = threading.Thread(target=lambda: stderr.read(), daemon=True)
        drain.start()
        yield commands[0], banner
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        finally:
            if drain is not None:
                drain.join(timeout=10)
            if process.stderr is not None:
                process.stderr.close()


def _shell(activate: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"{activate} && {command}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(400)
def test_the_first_five_minutes_work_as_written(make_run: tuple[str, list[str]]) -> None:
    _, banner = make_run
    commands = readme_commands()
    assert len(commands) == 4, commands
    activate, build, inspect = commands[1:]
    assert any('try       appforge build "build a calculator"' in line for line in banner), banner

    # The README activates `.venv`; this run's virtualenv is the one `make run` used.
    assert activate == ". .venv/bin/activate"
    activate = f". {Path(sys.prefix) / 'bin' / 'activate'}"

    assert build == 'appforge build "build a calculator"'
    built = _shell(activate, build)
    assert built.returncode == 0, built.stdout + built.stderr
    lines = built.stdout.strip().splitlines()
    execution_id = UUID.findall(lines[0])[-1]
    url = lines[-1].strip()
    assert url.startswith("http://127.0.0.1:8080/apps/"), lines
    with urllib.request.urlopen(url, timeout=10) as page:
        assert page.status == 200
        assert "<title>Calculator</title>" in page.read().decode()

    assert inspect.startswith("appforge inspect ") and UUID.search(inspect), inspect
    inspected = _shell(activate, UUID.sub(execution_id, inspect))
    assert inspected.returncode == 0, inspected.stdout + inspected.stderr
    assert "no problems" in inspected.stdout
    assert f"execution {execution_id}" in inspected.stdout
