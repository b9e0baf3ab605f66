"""Bring the stack of docker-compose.yml up, or down, with one command under Docker or podman.

Usage:
    python scripts/compose_up.py up   [-p PROJECT] [--engine auto|docker|podman]
    python scripts/compose_up.py env  # export lines: the host CLI's TLS files and signing key
    python scripts/compose_up.py down [-p PROJECT] [--engine ...] [--volumes] [--rmi]

The stack checks tokens and speaks mutual TLS with what its one-shot `keys` made; `up` copies
those files to APPFORGE_COMPOSE_KEYS (default .appforge/compose-keys), where `env` points the
CLI (`eval "$(python scripts/compose_up.py env)"`) and grpcurl can find them.

The environment is the compose file's: published ports (APPFORGE_CHAT_PORT, …), image names
(APPFORGE_IMAGE_REPO, APPFORGE_IMAGE_TAG, APPFORGE_POSTGRES_IMAGE, APPFORGE_REDIS_IMAGE); `down`
needs the same values as `up` to find the images it removes.

With a real Docker engine this is `docker compose up -d --build --wait`. Under podman (no Docker:
see ../shared/ci/README.md) health checks run only when someone runs them and podman-compose before
podman 4.6 ignores `condition: service_healthy`, so the start order of the compose file is walked
one step at a time: the three images built, postgres and redis until `podman healthcheck run`
passes, `keys` until it exits 0 (its files then copied out), each service's migrate until it
exits 0, then chat, deployer and builder until their gRPC health is SERVING on the published
ports. Every wait has a bound; a failure names its step, shows
the containers' logs and exits 1.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
# The services in the compose file's start order, with the variable that publishes each gRPC port
# and its default there.
SERVICES = {
    "chat": ("APPFORGE_CHAT_PORT", 50051),
    "deployer": ("APPFORGE_DEPLOYER_PORT", 50053),
    "builder": ("APPFORGE_BUILDER_PORT", 50052),
}
MIGRATIONS = tuple(f"migrate-{service}" for service in SERVICES)
KEYS = "keys"  # the one-shot that makes the secret and the certificates (`appforge keys`)
# Where they are in the `keys` volume, and the files the host's clients use.
KEYS_IN_VOLUME = "/data/keys"
CLIENT_FILES = {
    "APPFORGE_TLS_CA_FILE": "ca.pem",
    "APPFORGE_TLS_CERT_FILE": "tls.pem",
    "APPFORGE_TLS_KEY_FILE": "tls.key",
    "APPFORGE_AUTH_JWT_SECRET_FILE": "jwt-secret",
}
INFRA = ("postgres", "redis")
ENGINES = ("auto", "docker", "podman")
# Reconnect quickly while a published port has no listener yet (gRPC's default backoff is 1 s).
FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


class StepFailed(Exception):
    """A step of bringing the stack up or down did not finish; `step` names it."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step
        self.detail = detail


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Bounds, in seconds, of each kind of wait."""

    build: float = 900.0  # one image
    infra: float = 90.0  # postgres and redis healthy
    migrate: float = 180.0  # one migrate one-shot
    serving: float = 90.0  # one service SERVING
    compose: float = 300.0  # one compose command (under Docker: all of `up --wait`)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What one run works on: the project, the engine, the compose environment, the bounds."""

    project: str
    engine: str  # "docker" or "podman"
    env: dict[str, str]
    timeouts: Timeouts

    def image(self, service: str) -> str:
        """The image name docker-compose.yml gives `service` (and its migrate)."""
        repo = self.env.get("APPFORGE_IMAGE_REPO") or "appforge"
        tag = self.env.get("APPFORGE_IMAGE_TAG") or "latest"
        return f"{repo}-{service}:{tag}"

    def address(self, service: str) -> str:
        variable, default = SERVICES[service]
        return f"127.0.0.1:{self.env.get(variable) or default}"

    @property
    def keys(self) -> Path:
        return keys_dir(self.env)


def keys_dir(env: dict[str, str]) -> Path:
    """Where the host keeps a copy of the stack's keys (APPFORGE_COMPOSE_KEYS)."""
    return Path(env.get("APPFORGE_COMPOSE_KEYS") or ROOT / ".appforge" / "compose-keys")


def client_env(env: dict[str, str]) -> dict[str, str]:
    """The variables that make `appforge build`, `inspect` and `token` on the host call the
    stack: its CA, its certificate as the client's, its signing secret."""
    directory = keys_dir(env).resolve()
    return {variable: str(directory / name) for variable, name in CLIENT_FILES.items()}


def _log(event: str, **fields: object) -> None:
    pairs = " ".join(f"{key}={value}" for key, value in fields.items())
    print(f"compose_up: {event} {pairs}".rstrip(), flush=True)


def _run(
    command: Sequence[str], env: dict[str, str], timeout: float, step: str
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise StepFailed(step, f"`{' '.join(command[:4])} …` took over {timeout:.0f} s") from exc
    except FileNotFoundError as exc:
        raise StepFailed(step, f"{command[0]} is not installed") from exc


def _checked(
    command: Sequence[str], env: dict[str, str], timeout: float, step: str
) -> subprocess.CompletedProcess[str]:
    done = _run(command, env, timeout, step)
    if done.returncode != 0:
        raise StepFailed(step, f"exit {done.returncode}\n{done.stdout[-6000:]}")
    return done


def _real_docker_compose(env: dict[str, str]) -> bool:
    """`docker compose` works and talks to a Docker engine, not to podman's Docker API."""
    if shutil.which("docker") is None:
        return False
    probe = ["docker", "compose", "version"]
    if _run(probe, env, 30, "detect engine").returncode != 0:
        return False
    components = "{{range .Server.Components}}{{.Name}};{{end}}"
    server = _run(["docker", "version", "--format", components], env, 30, "detect engine")
    return server.returncode == 0 and "podman" not in server.stdout.lower()


def detect_engine(requested: str, env: dict[str, str]) -> str:
    """ "docker" or "podman" for `requested` (one of ENGINES)."""
    if requested != "auto":
        return requested
    if _real_docker_compose(env):
        return "docker"
    if shutil.which("podman") is not None:
        return "podman"
    raise StepFailed(
        "detect engine",
        "neither `docker compose` with a Docker engine nor podman is available "
        "(on our machines: bash ../shared/ci/container-engine.sh)",
    )


# --- Docker -------------------------------------------------------------------------------------


def _docker_compose(plan: Plan) -> list[str]:
    return ["docker", "compose", "-p", plan.project, "-f", str(COMPOSE_FILE)]


def _docker_up(plan: Plan) -> None:
    command = [*_docker_compose(plan), "up", "-d", "--build", "--wait"]
    help_text = _run([*_docker_compose(plan), "up", "--help"], plan.env, 30, "up").stdout
    if "--wait-timeout" in help_text:
        command += ["--wait-timeout", str(int(plan.timeouts.compose))]
    step = "docker compose up --wait"
    _checked(command, plan.env, plan.timeouts.compose + plan.timeouts.build * 3, step)


def _docker_down(plan: Plan, *, volumes: bool) -> None:
    extra = ["-v"] if volumes else []
    _checked([*_docker_compose(plan), "down", *extra], plan.env, plan.timeouts.compose, "down")


# --- podman -------------------------------------------------------------------------------------


def _podman_compose(plan: Plan, *args: str, step: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec("podman_compose") is not None:
        command = [sys.executable, "-m", "podman_compose"]
    elif shutil.which("podman-compose") is not None:
        command = ["podman-compose"]
    else:
        raise StepFailed(step, "podman-compose is not installed (pip install -e '.[dev]')")
    command += ["-p", plan.project, "-f", str(COMPOSE_FILE), *args]
    return _checked(command, plan.env, plan.timeouts.compose, step)


def container_names(project: str, service: str | None = None) -> list[str]:
    """The podman containers of `project` (of its `service` only, when given)."""
    labels = [f"com.docker.compose.project={project}"]
    if service is not None:
        labels.append(f"com.docker.compose.service={service}")
    filters = [arg for label in labels for arg in ("--filter", f"label={label}")]
    command = ["podman", "ps", "-a", *filters, "--format", "{{.Names}}"]
    return sorted(_run(command, dict(os.environ), 60, "list containers").stdout.split())


def _container(plan: Plan, service: str, step: str) -> str:
    names = container_names(plan.project, service)
    if len(names) != 1:
        raise StepFailed(step, f"expected one {service} container, found {names}")
    return names[0]


def healthy(plan: Plan, service: str, step: str) -> bool:
    """Runs the service's compose health check once (nothing else runs it under podman)."""
    name = _container(plan, service, step)
    return _run(["podman", "healthcheck", "run", name], plan.env, 60, step).returncode == 0


def _until(step: str, ready: Callable[[], bool], timeout: float) -> None:
    """Polls `ready` until it is true. Only for health: nothing signals it under podman."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise StepFailed(step, f"not ready within {timeout:.0f} s")
        time.sleep(0.25)


def _serving(address: str, timeout: float, keys: Path) -> bool:
    """One gRPC health Check on `address` over mutual TLS with the stack's `keys`, waiting up
    to `timeout` for it to answer."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    credentials = grpc.ssl_channel_credentials(
        root_certificates=(keys / "ca.pem").read_bytes(),
        private_key=(keys / "tls.key").read_bytes(),
        certificate_chain=(keys / "tls.pem").read_bytes(),
    )
    with grpc.secure_channel(address, credentials, options=FAST_RECONNECT) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(), timeout=timeout, wait_for_ready=True
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def build_images(plan: Plan) -> None:
    """The three images, named as docker-compose.yml names them."""
    for service in SERVICES:
        command = ["podman", "build", "--format", "docker", "--network=host"]
        command += ["-t", plan.image(service), "--build-arg", f"SERVICE={service}"]
        if Path("/etc/ssl/certs").is_dir():  # apt and pip in the build trust what the host does
            command += ["-v", "/etc/ssl/certs:/etc/ssl/certs:ro"]
        started = time.monotonic()
        _checked([*command, str(ROOT)], plan.env, plan.timeouts.build, f"build {service} image")
        _log("built", image=plan.image(service), seconds=f"{time.monotonic() - started:.1f}")


def _podman_up(plan: Plan) -> None:
    build_images(plan)
    step = "postgres and redis healthy"
    _podman_compose(plan, "up", "-d", "--no-deps", *INFRA, step=step)
    _until(step, lambda: all(healthy(plan, s, step) for s in INFRA), plan.timeouts.infra)
    _log("healthy", services=",".join(INFRA))

    # --no-build: the images were just built above (podman-compose would otherwise only look
    # them up, or rebuild a missing one without the build options used here).
    _podman_compose(plan, "up", "-d", "--no-deps", "--no-build", KEYS, step=KEYS)
    _exited_zero(plan, KEYS)
    copy_keys(plan)
    _podman_compose(plan, "up", "-d", "--no-deps", "--no-build", *MIGRATIONS, step="migrations")
    for migration in MIGRATIONS:
        _exited_zero(plan, migration)
        _log("migrated", service=migration)

    _podman_compose(plan, "up", "-d", "--no-deps", "--no-build", *SERVICES, step="services")
    for service in SERVICES:
        address = plan.address(service)
        # Each check waits a little for the port to answer; one cut short by a container that
        # is still starting is asked again, until the bound.
        ready = functools.partial(_serving, address, 5, plan.keys)
        _until(f"{service} SERVING on {address}", ready, plan.timeouts.serving)
        _log("serving", service=service, address=address)


def _exited_zero(plan: Plan, one_shot: str) -> None:
    """Until the one-shot container `one_shot` exits; StepFailed unless with 0."""
    name = _container(plan, one_shot, one_shot)
    waited = _run(["podman", "wait", name], plan.env, plan.timeouts.migrate, one_shot)
    code = waited.stdout.strip().splitlines()[-1:] or [f"(podman wait: {waited.returncode})"]
    if code != ["0"]:
        raise StepFailed(one_shot, f"exited with {code[0]}")


def copy_keys(plan: Plan) -> None:
    """The `keys` volume's files, copied to the host's keys directory (from the exited
    one-shot's container: it mounts the volume)."""
    target = plan.keys
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    source = f"{KEYS_IN_VOLUME}/."
    if plan.engine == "docker":
        command = [*_docker_compose(plan), "cp", f"{KEYS}:{source}", str(target)]
    else:
        command = ["podman", "cp", f"{_container(plan, KEYS, 'copy keys')}:{source}", str(target)]
    _checked(command, plan.env, 60, "copy keys")
    for name in ("jwt-secret", "tls.key", "ca.key"):
        if (target / name).exists():
            (target / name).chmod(0o600)
    _log("keys", directory=target)


def _podman_down(plan: Plan, *, volumes: bool) -> None:
    extra = ["-v"] if volumes else []
    _podman_compose(plan, "down", *extra, "--timeout", "5", step="down")


# --- the command ----------------------------------------------------------------------------------


def logs(plan: Plan) -> str:
    """The tail of every container's log, for failure messages."""
    if plan.engine == "docker":
        command = [*_docker_compose(plan), "logs", "--no-color", "--tail", "80"]
        return _run(command, plan.env, 60, "logs").stdout
    sections = []
    for name in container_names(plan.project):
        state = ["podman", "ps", "-a", "--filter", f"name=^{name}$", "--format", "{{.Status}}"]
        status = _run(state, plan.env, 60, "logs").stdout.strip()
        log = _run(["podman", "logs", "--tail", "80", name], plan.env, 60, "logs").stdout
        sections.append(f"--- {name} ({status}) ---\n{log}")
    return "\n".join(sections) or "(no containers)"


def up(plan: Plan) -> None:
    """The whole stack, started and ready (see the module docstring)."""
    started = time.monotonic()
    if plan.engine == "docker":
        _docker_up(plan)
        copy_keys(plan)
    else:
        _podman_up(plan)
    _log(
        "up", project=plan.project, engine=plan.engine, seconds=f"{time.monotonic() - started:.1f}"
    )
    for service in SERVICES:
        _log("published", service=service, address=plan.address(service))
    _log("clients", hint='eval "$(python scripts/compose_up.py env)"')


def down(plan: Plan, *, volumes: bool, rmi: bool) -> None:
    """The project's containers and network removed; its volumes and images when asked."""
    if plan.engine == "docker":
        _docker_down(plan, volumes=volumes)
    else:
        _podman_down(plan, volumes=volumes)
    if rmi:
        images = [plan.image(service) for service in SERVICES]
        # Images still used elsewhere, or never built, are left alone: not a failure of `down`.
        _run([plan.engine, "rmi", *images], plan.env, 120, "remove images")
    _log("down", project=plan.project, engine=plan.engine)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, summary in (("up", "build, start and wait until ready"), ("down", "remove")):
        sub = commands.add_parser(name, help=summary)
        sub.add_argument(
            "-p",
            "--project",
            default=os.environ.get("COMPOSE_PROJECT_NAME") or "appforge",
            help="compose project name (default: $COMPOSE_PROJECT_NAME or appforge)",
        )
        sub.add_argument("--engine", choices=ENGINES, default="auto", help="default: auto")
    commands.add_parser("env", help="print export lines for the host's CLI (eval them)")
    down_parser = commands.choices["down"]
    down_parser.add_argument("-v", "--volumes", action="store_true", help="remove volumes too")
    down_parser.add_argument("--rmi", action="store_true", help="remove the three appforge images")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env = dict(os.environ)
    if args.command == "env":
        for variable, path in client_env(env).items():
            print(f"export {variable}={shlex.quote(path)}")
        return 0
    plan: Plan | None = None
    try:
        plan = Plan(
            project=args.project,
            engine=detect_engine(args.engine, env),
            env=env,
            timeouts=Timeouts(),
        )
        if args.command == "up":
            up(plan)
        else:
            down(plan, volumes=args.volumes, rmi=args.rmi)
    except StepFailed as exc:
        print(
            f"compose_up: {args.command} failed at step '{exc.step}': {exc.detail}", file=sys.stderr
        )
        if plan is not None and args.command == "up":
            print(f"\ncontainer logs:\n{logs(plan)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
