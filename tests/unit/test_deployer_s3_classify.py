"""The `s3` target's pure parts: error classification, content types, upload planning."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from appforge.services.deployer.content_types import content_type_for
from appforge.services.deployer.targets.base import ArtifactFile, PublishError
from appforge.services.deployer.targets.s3 import S3Config, S3Target, plan_uploads
from appforge.services.deployer.targets.s3_errors import classify_s3_error


def client_error(status: int, code: str, message: str = "", op: str = "PutObject") -> ClientError:
    error: dict[str, Any] = {"Code": code}
    if message:
        error["Message"] = message
    response: Any = {"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, op)


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (503, "ServiceUnavailable", True),
        (503, "SlowDown", True),
        (500, "InternalError", True),
        (502, "BadGateway", True),
        (429, "TooManyRequests", True),
        (400, "RequestTimeout", True),  # a 4xx status, but the code says "try again"
        (400, "InvalidBucketName", False),
        (400, "InvalidArgument", False),
        (401, "Unauthorized", False),
        (403, "AccessDenied", False),
        (403, "InvalidAccessKeyId", False),
        (403, "SignatureDoesNotMatch", False),
        (404, "NoSuchBucket", False),
        (409, "BucketAlreadyExists", False),
    ],
)
def test_client_errors_by_status_and_code(status: int, code: str, retryable: bool) -> None:
    assert classify_s3_error(client_error(status, code)).retryable is retryable


def test_client_error_messages_are_short_and_human() -> None:
    error = classify_s3_error(client_error(503, "ServiceUnavailable", "Please slow down."))
    assert str(error) == "s3 503 ServiceUnavailable: Please slow down."
    # HEAD responses have no body: botocore's code is the status itself.
    assert str(classify_s3_error(client_error(403, "403", "Forbidden"))) == "s3 403 Forbidden"
    long = classify_s3_error(client_error(500, "InternalError", "x" * 5000))
    assert len(str(long)) <= 300


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
        ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:9"),
        ConnectionClosedError(endpoint_url="http://127.0.0.1:9"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientConnectionError("reset"),
        TimeoutError(),
        ConnectionResetError("reset by peer"),
        OSError("network unreachable"),
    ],
    ids=type,
)
def test_transport_failures_are_retryable(exc: Exception) -> None:
    error = classify_s3_error(exc)
    assert error.retryable is True
    assert str(error).startswith(("s3 timed out", "s3 connection failed"))


@pytest.mark.parametrize(
    "exc",
    [NoCredentialsError(), ParamValidationError(report="Invalid bucket name"), ValueError("bug")],
    ids=type,
)
def test_everything_else_is_not_retryable(exc: Exception) -> None:
    error = classify_s3_error(exc)
    assert error.retryable is False
    assert str(error).startswith("s3 ")


def test_a_publish_error_passes_through() -> None:
    original = PublishError("already classified", retryable=True)
    assert classify_s3_error(original) is original


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("index.html", "text/html; charset=utf-8"),
        ("a/b/page.HTM", "text/html; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("logo.svg", "image/svg+xml"),
        ("photo.png", "image/png"),
        ("data.json", "application/json"),
        ("Makefile", "application/octet-stream"),
        ("blob.unknownext", "application/octet-stream"),
    ],
)
def test_content_types(path: str, expected: str) -> None:
    assert content_type_for(path) == expected


def test_plan_keys_types_and_cache_control() -> None:
    plan = plan_uploads(
        "app-1",
        "v-1",
        [
            ArtifactFile(path="index.html", content=b"<p>", content_type=""),
            ArtifactFile(path="x/app.js", content=b"1", content_type=""),
            ArtifactFile(path="page", content=b"<p>", content_type="text/html"),
        ],
    )
    assert [(u.key, u.content_type, u.cache_control) for u in plan] == [
        ("apps/app-1/versions/v-1/index.html", "text/html; charset=utf-8", "no-cache"),
        (
            "apps/app-1/versions/v-1/x/app.js",
            "text/javascript; charset=utf-8",
            "public, max-age=31536000, immutable",
        ),
        ("apps/app-1/versions/v-1/page", "text/html", "no-cache"),
    ]


@pytest.mark.parametrize(
    "files",
    [
        [],
        [
            ArtifactFile(path="a", content=b"", content_type=""),
            ArtifactFile(path="a", content=b"", content_type=""),
        ],
        [ArtifactFile(path="a/" + "x" * 1100, content=b"", content_type="")],
        [ArtifactFile(path="a\nb", content=b"", content_type="")],
        [ArtifactFile(path="a/", content=b"", content_type="")],
    ],
    ids=["none", "duplicate", "too-long", "control-char", "trailing-slash"],
)
def test_plan_rejects_bad_files(files: list[ArtifactFile]) -> None:
    with pytest.raises(PublishError) as caught:
        plan_uploads("app", "v1", files)
    assert caught.value.retryable is False


def test_urls() -> None:
    def url(**config: Any) -> str:
        return S3Target(S3Config(bucket="bkt", **config)).url_for("a", "v")

    assert url(endpoint_url="http://127.0.0.1:9000/") == (
        "http://127.0.0.1:9000/bkt/apps/a/versions/v/index.html"
    )
    assert (
        url(region="eu-west-1")
        == "https://bkt.s3.eu-west-1.amazonaws.com/apps/a/versions/v/index.html"
    )
    assert url(public_url="https://cdn.example.com") == (
        "https://cdn.example.com/apps/a/versions/v/index.html"
    )


def test_config_hides_the_secret_and_disables_botocore_retries() -> None:
    config = S3Config(endpoint_url="http://x", bucket="b", secret_access_key="s3cr3t")
    assert "s3cr3t" not in repr(config)
    client_config = config.client_config()
    assert client_config.retries["total_max_attempts"] == 1
    assert client_config.s3 == {"addressing_style": "path"}
