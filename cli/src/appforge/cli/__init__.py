"""The `appforge` command line."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import re
import sys
from collections.abc import Sequence

from appforge.cli import installed
from appforge.services.common import auth, secrets
from appforge.services.common.errors import AppforgeError, ConfigError
from appforge.services.common.logging import configure_logging
from appforge.services.common.settings import DEFAULT_METRICS_PORTS, DEFAULT_PORTS, Settings
from appforge.services.common.tls import TlsSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appforge",
        description="appforge: the gRPC services of a chat-driven app builder.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser(
        "migrate",
        help="apply database migrations (DATABASE_URL, or the embedded SQLite file)",
    )

    up = commands.add_parser(
        "up",
        help="run chat, builder and deployer in one process (embedded default: no servers needed)",
    )
    up.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    up.add_argument("--chat-port", type=int, default=DEFAULT_PORTS["chat"])
    up.add_argument("--builder-port", type=int, default=DEFAULT_PORTS["builder"])
    up.add_argument("--deployer-port", type=int, default=DEFAULT_PORTS["deployer"])
    up.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="Prometheus metrics of all three (default APPFORGE_METRICS_PORT or 9050; 0: off)",
    )
    up.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="port serving deployed apps (default APPFORGE_DEPLOY_HTTP_PORT or 8080)",
    )
    up.add_argument(
        "--insecure",
        action="store_true",
        help="check no tokens (default: the APPFORGE_AUTH_* key, else a secret made in the "
        "data directory on first start)",
    )

    serve = commands.add_parser("serve", help="run one service")
    serve.add_argument(
        "service",
        nargs="?",
        choices=installed.SERVICES,
        help="the service to run (default: the only one installed here, as in an image)",
    )
    serve.add_argument(
        "--host", default=None, help="address to bind (default APPFORGE_HOST or 127.0.0.1)"
    )
    serve.add_argument(
        "--port",
        type=int,
        default=None,
        help="port (default: chat 50051, builder 50052, deployer 50053)",
    )
    serve.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="deployer: port serving deployed apps (default APPFORGE_DEPLOY_HTTP_PORT or 8080)",
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="Prometheus metrics port (default APPFORGE_METRICS_PORT, else chat 9051, "
        "builder 9052, deployer 9053; 0 turns it off)",
    )
    serve.add_argument(
        "--migrate",
        action="store_true",
        help="apply migrations before serving (always done on the embedded SQLite default)",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="serve without a key: every caller unchecked (also APPFORGE_INSECURE=true); "
        "without it, serving needs APPFORGE_AUTH_JWT_SECRET(_FILE) or "
        "APPFORGE_AUTH_JWT_PUBLIC_KEY_FILE",
    )
    build = commands.add_parser(
        "build",
        help="build an app from a prompt and deploy it, showing progress live",
        description="Create the app if needed, run Build, follow the deployment. Exit status: "
        "0 deployed, 1 the build or deployment failed, 2 a request was refused, "
        "3 a service could not be reached.",
    )
    build.add_argument("prompt", help='what to build, e.g. "build a calculator"')
    build.add_argument(
        "--app", default=None, help="the app's name (created if new; default: from the prompt)"
    )
    build.add_argument("--team", default="default", help="the app's team (default: default)")
    build.add_argument("--model", default="", help="scripted or openai (default: the builder's)")
    build.add_argument("--chat", default=None, help="chat address (default APPFORGE_CHAT_ADDR)")
    build.add_argument(
        "--builder", default=None, help="builder address (default APPFORGE_BUILDER_ADDR)"
    )
    build.add_argument(
        "--deployer", default=None, help="deployer address (default APPFORGE_DEPLOYER_ADDR)"
    )
    build.add_argument("--json", action="store_true", help="print events as JSON lines")
    build.add_argument(
        "--token",
        default=None,
        help="the token to call with (default APPFORGE_TOKEN, else one minted from the "
        "APPFORGE_AUTH_* key or the one `appforge up` keeps in the data directory)",
    )
    build.add_argument(
        "--timeout", type=float, default=600.0, help="seconds for the whole cycle (default 600)"
    )
    build.add_argument(
        "--connect-timeout",
        type=_positive_seconds,
        default=10.0,
        help="seconds to keep trying a service that cannot be reached before exit 3 "
        "(default 10; a deployer lost while followed gets three times that to restart)",
    )

    inspect = commands.add_parser(
        "inspect",
        help="show an app's or an execution's messages and flag splits, repeated stamps, "
        "stuck tool calls",
        description="Exit status: 0 nothing flagged, 1 something flagged, 2 unknown id, "
        "3 chat unreachable.",
    )
    inspect.add_argument("id", help="an app id or an execution id")
    inspect.add_argument("--chat", default=None, help="chat address (default APPFORGE_CHAT_ADDR)")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.add_argument(
        "--token",
        default=None,
        help="the token to call with (default APPFORGE_TOKEN, else one minted from the "
        "APPFORGE_AUTH_* key or the one `appforge up` keeps in the data directory)",
    )

    keys = commands.add_parser(
        "keys",
        help="make a signing secret and a private CA with a certificate, for tokens and TLS",
        description="Writes DIR/jwt-secret, DIR/ca.pem (+ ca.key) and DIR/tls.pem + tls.key "
        "for every --host (and localhost, 127.0.0.1); files that exist are kept.",
    )
    keys.add_argument("directory", help="where to write them (created if missing)")
    keys.add_argument(
        "--host", action="append", default=[], help="a name the services are reached by (repeat)"
    )
    keys.add_argument("--days", type=int, default=365, help="certificate lifetime (default 365)")

    token = commands.add_parser(
        "token",
        help="print a signed token for grpcurl and other clients",
        description="Signed with the APPFORGE_AUTH_* key, else the secret `appforge up` made "
        "in the data directory. Use it as: grpcurl -H 'authorization: Bearer TOKEN' ...",
    )
    token.add_argument(
        "--team",
        action="append",
        default=[],
        help="a team the token acts for (repeat for several; none for an admin)",
    )
    token.add_argument(
        "--role", choices=[r.value for r in auth.Role], default="user", help="(default user)"
    )
    token.add_argument("--ttl", default="1h", help="lifetime: 90s, 30m, 1h, 7d (default 1h)")
    token.add_argument("--subject", default=None, help="the sub claim (default cli:$USER)")

    health = commands.add_parser(
        "health",
        help="check a server's gRPC health (exit 0 when SERVING; for container health checks)",
    )
    health.add_argument(
        "address",
        nargs="?",
        help="HOST:PORT, e.g. 127.0.0.1:50051 (default: 127.0.0.1 and the default port of "
        "the only service installed here, as in an image)",
    )
    health.add_argument(
        "--service", default="", help="a service name to check (default: the whole server)"
    )
    health.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    return parser


def _positive_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {raw!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {raw!r}")
    return value


def _first(*values: int | None) -> int:
    return next(v for v in values if v is not None)


def _app_name(prompt: str) -> str:
    words = re.findall(r"[a-z0-9]+", prompt.lower())
    return "-".join(words)[:60].strip("-") or "app"


def _build(args: argparse.Namespace, settings: Settings) -> int:
    from appforge.cli.build import BuildOptions, run_build
    from appforge.cli.tokens import credentials

    options = BuildOptions(
        prompt=args.prompt,
        app=args.app or _app_name(args.prompt),
        team=args.team,
        chat=args.chat or settings.chat_addr,
        builder=args.builder or settings.builder_addr,
        deployer=args.deployer or settings.deployer_addr,
        model=args.model,
        json=args.json,
        timeout=args.timeout,
        connect_timeout=args.connect_timeout,
        reconnect_timeout=3 * args.connect_timeout,
        tls=settings.tls,
        # As a user of the app's team, for as long as the whole cycle may take.
        credentials=credentials(
            args.token, settings, teams=[args.team], role=auth.Role.USER, ttl=args.timeout + 120
        ),
    )
    return asyncio.run(run_build(options, sys.stdout, sys.stderr, limits=settings.limits))


def _inspect(args: argparse.Namespace, settings: Settings) -> int:
    from appforge.cli import inspect as inspect_command
    from appforge.cli.tokens import credentials

    return inspect_command.run(
        args.chat or settings.chat_addr,
        args.id,
        args.json,
        sys.stdout,
        sys.stderr,
        tls=settings.tls,
        # An operator's look at any app or execution: as an admin, when minted.
        credentials=credentials(args.token, settings, teams=[], role=auth.Role.ADMIN, ttl=300),
    )


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from appforge.cli.keys import make_keys

    for line in make_keys(Path(args.directory), args.host, args.days):
        print(line)
    return 0


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from appforge.cli.tokens import mint, parse_ttl

    token = mint(
        settings,
        teams=args.team,
        role=auth.Role(args.role),
        ttl=parse_ttl(args.ttl),
        subject_name=args.subject,
    )
    print(token)
    return 0


def _to_run(args: argparse.Namespace) -> str:
    """What `up` or `serve` runs ("up", or the service), refused unless installed here."""
    if args.command == "up":
        installed.require(*installed.SERVICES)
        return "up"
    service: str = args.service or installed.the_one_service()
    installed.require(service)
    return service


def _with_key(args: argparse.Namespace, settings: Settings) -> Settings:
    """The settings `up` or `serve` run with, as far as tokens go.

    `up` with no key configured makes one in its data directory (the CLI finds it there).
    `serve` with no key refuses, unless told to serve unchecked; either way unchecked is
    said at every start.
    """
    import dataclasses

    from appforge.services.common.logging import get_logger

    insecure = args.insecure or settings.auth.insecure
    if settings.auth.enabled:
        return settings
    if insecure:
        get_logger("appforge.cli").warning(
            "serving_without_tokens",
            detail="every caller is unchecked: any client that reaches a port may read and "
            f"write every team's apps; set {auth.SECRET} or {auth.PUBLIC_KEY_FILE} to check",
        )
        return settings
    if args.command == "up":
        secret = auth.ensure_local_secret(settings.data_dir)
        return dataclasses.replace(settings, auth=dataclasses.replace(settings.auth, secret=secret))
    raise ConfigError(
        f"appforge serve checks a token on every call and has no key: set {auth.SECRET} "
        f"(or {auth.SECRET_FILE}) for HS256, or {auth.PUBLIC_KEY_FILE} (and "
        f"{auth.PRIVATE_KEY_FILE} for the builder and the deployer) for RS256/EdDSA; "
        "or pass --insecure (APPFORGE_INSECURE=true) to serve every caller unchecked"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "health":
            from appforge.cli.health import run

            address = args.address or f"127.0.0.1:{DEFAULT_PORTS[installed.the_one_service()]}"
            return run(address, args.service, args.timeout, TlsSettings.from_env(os.environ))
        env = os.environ
        settings = Settings.from_env(env)
        commands = {"build": _build, "inspect": _inspect, "token": _token, "keys": _keys}
        client = commands.get(args.command)
        if client is not None:
            return client(args, settings)
        secrets.register_env(env)  # no log line, status or message of ours shows them
        configure_logging(settings.log_level, settings.log_format)
        if args.command in ("up", "serve"):
            from appforge.services.common import tracing
            from appforge.services.common.metrics import serve_metrics

            settings = _with_key(args, settings)
            # OTEL_*: off (and not imported) unless an exporter is named; flushed at exit.
            if tracing.configure(
                env, "appforge" if args.command == "up" else f"appforge-{_to_run(args)}"
            ):
                atexit.register(tracing.shutdown)
            name = _to_run(args)
            metrics_port = _first(
                args.metrics_port, settings.metrics_port, DEFAULT_METRICS_PORTS[name]
            )
            serve_metrics(args.host or settings.host, metrics_port)
        if args.command == "up":
            from appforge.cli.up import Ports, up

            ports = Ports(
                host=args.host or settings.host,
                chat=args.chat_port,
                builder=args.builder_port,
                deployer=args.deployer_port,
                http=args.http_port,
            )
            asyncio.run(up(settings, env, ports))
            return 0
        if args.command == "migrate":
            from appforge.cli.serve import migrate_database

            services = asyncio.run(migrate_database(settings))
            print(
                f"migrated {', '.join(services) or 'nothing (no service installed)'} on "
                f"{settings.resolved_database_url().split('@')[-1]}"
            )
            return 0
        if args.command == "serve":
            from appforge.cli import serve

            host = args.host or settings.host
            port = args.port if args.port is not None else DEFAULT_PORTS[name]
            apply_migrations = args.migrate or not settings.database_url
            if name == "deployer":
                asyncio.run(
                    serve.serve_deployer(
                        settings, env, host, port, args.http_port, apply_migrations
                    )
                )
            elif name == "builder":
                asyncio.run(serve.serve_builder(settings, env, host, port, apply_migrations))
            else:
                asyncio.run(serve.serve_chat(settings, host, port, apply_migrations))
            return 0
    except AppforgeError as exc:
        print(f"appforge: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"appforge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
