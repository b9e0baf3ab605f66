"""TLS on every gRPC server and client, from four variables.

- `APPFORGE_TLS_CERT_FILE` + `APPFORGE_TLS_KEY_FILE` (PEM): servers listen with TLS, and the
  process's own clients present this certificate (so it serves for mutual TLS too);
- `APPFORGE_TLS_CLIENT_CA_FILE`: servers require a client certificate signed by this CA;
- `APPFORGE_TLS_CA_FILE`: the CA clients trust (default: the system's roots).

A client (a service calling another, the CLI) uses TLS when the CA file or a certificate is
set, plaintext otherwise. A file that is missing or unreadable is a ConfigError naming its
variable, at start-up, not at the first call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from appforge.services.common import tracing
from appforge.services.common.auth import Metadata
from appforge.services.common.errors import ConfigError

CERT = "APPFORGE_TLS_CERT_FILE"
KEY = "APPFORGE_TLS_KEY_FILE"
CLIENT_CA = "APPFORGE_TLS_CLIENT_CA_FILE"
CA = "APPFORGE_TLS_CA_FILE"


@dataclass(frozen=True, kw_only=True)
class TlsSettings:
    """The PEM contents (not paths: read once, at start-up) of what TLS needs."""

    cert: bytes | None = None
    key: bytes | None = None
    client_ca: bytes | None = None
    ca: bytes | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TlsSettings:
        cert, key = _read(env, CERT), _read(env, KEY)
        if (cert is None) != (key is None):
            raise ConfigError(f"{CERT} and {KEY} go together: set both or neither")
        client_ca = _read(env, CLIENT_CA)
        if client_ca is not None and cert is None:
            raise ConfigError(f"{CLIENT_CA} (mutual TLS) needs {CERT} and {KEY}")
        return cls(cert=cert, key=key, client_ca=client_ca, ca=_read(env, CA))

    @property
    def serving(self) -> bool:
        """Whether servers listen with TLS."""
        return self.cert is not None

    @property
    def mutual(self) -> bool:
        """Whether servers require a client certificate."""
        return self.client_ca is not None

    @property
    def calling(self) -> bool:
        """Whether clients connect with TLS."""
        return self.ca is not None or self.cert is not None

    def server_credentials(self) -> grpc.ServerCredentials | None:
        if self.cert is None or self.key is None:
            return None
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        if not self.calling:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def open_channel(
    address: str,
    tls: TlsSettings | None,
    options: Sequence[tuple[str, Any]] | None = None,
    credentials: Metadata | None = None,
) -> grpc.aio.Channel:
    """An asyncio channel to `address`: TLS when `tls` says clients call with it; every call
    carrying `credentials` (`authorization` metadata) when given, and the current trace
    context when tracing is on."""
    secure = tls.channel_credentials() if tls is not None else None
    # The stubs type aio interceptors as a placeholder that takes nothing real.
    interceptors: Any = None
    if credentials or tracing.enabled():
        interceptors = [_Unary(credentials or ()), _Stream(credentials or ())]
    if secure is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(address, secure, options=options, interceptors=interceptors)


class _WithMetadata:
    """Adds the same metadata, and the current trace context, to every call it intercepts."""

    def __init__(self, metadata: Metadata) -> None:
        self.metadata = metadata

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *self.metadata, *tracing.inject())
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files an interceptor under the first kind it is (`isinstance`, elif): one class
# per kind of call.
class _Unary(_WithMetadata, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if not tracing.enabled():
            return await continuation(self._details(details), request)
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        with tracing.span(method.lstrip("/"), kind="client", attributes={"rpc.system": "grpc"}):
            call = await continuation(self._details(details), request)
            try:
                await call  # the span lasts as long as the call
            except grpc.aio.AioRpcError as exc:  # the caller's own await raises it again
                tracing.set_attribute("rpc.grpc.status_code", exc.code().value[0])
            return call


class _Stream(_WithMetadata, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


def _read(env: Mapping[str, str], name: str) -> bytes | None:
    path = env.get(name, "")
    if not path:
        return None
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{name}={path!r} cannot be read: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in content:
        raise ConfigError(f"{name}={path!r} is not a PEM file")
    return content
