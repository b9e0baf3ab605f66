"""How the `s3` target classifies failures: what another attempt may fix, and what it may not.

Every error an S3 call raises becomes one `PublishError` with a short, human message;
botocore never retries by itself, so this is where "retry later" is decided.
"""

from __future__ import annotations

import http
from typing import Any

import aiohttp
import botocore.exceptions  # type: ignore[import-untyped, unused-ignore]

from appforge.services.deployer.targets.base import PublishError

MAX_MESSAGE_CHARS = 300

# Error codes that mean "try again later", whatever HTTP status carries them
# (RequestTimeout, for one, comes with a 400).
RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "OperationAborted",
    }
)


def _leaves(errors: BaseExceptionGroup[Any]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in errors.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def most_telling(errors: ExceptionGroup[Exception]) -> PublishError:
    """One error for a batch of failed uploads: a permanent failure beats a transient one."""
    classified = [classify_s3_error(exc) for exc in _leaves(errors) if isinstance(exc, Exception)]
    if not classified:
        return PublishError(f"s3 upload failed: {errors}", retryable=False)
    return next((e for e in classified if not e.retryable), classified[0])


def http_status(exc: Any) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def _short(text: object) -> str:
    one_line = " ".join(str(text).split())
    if len(one_line) <= MAX_MESSAGE_CHARS:
        return one_line
    return one_line[: MAX_MESSAGE_CHARS - 1] + "…"


def _client_error(exc: Any) -> PublishError:
    status = http_status(exc)
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "")
    message = str(error.get("Message") or "")
    if code == str(status) or not code:
        # Responses without a body (HEAD) carry the status as their code.
        code = _reason(status)
    head = " ".join(part for part in ("s3", str(status or ""), code) if part)
    redundant = message.replace(" ", "") == code  # "Service Unavailable" says no more
    text = f"{head}: {message}" if message and not redundant else head
    retryable = code in RETRYABLE_CODES or status == 429 or (status is not None and status >= 500)
    return PublishError(_short(text), retryable=retryable)


def _reason(status: int | None) -> str:
    try:
        return http.HTTPStatus(status or 0).phrase.replace(" ", "")
    except ValueError:
        return "Error"


def classify_s3_error(exc: BaseException) -> PublishError:
    """A `PublishError` for whatever an S3 call raised, retryable or not (issue 3, "Policy").

    Retryable: HTTP 429 and 5xx, throttling and timeout codes, timeouts and connection
    errors. Not retryable: other 4xx (bad credentials, no such bucket…), invalid
    parameters, missing credentials, and anything unforeseen (it is a bug, not a blip).
    """
    errors = botocore.exceptions
    if isinstance(exc, PublishError):
        return exc
    if isinstance(exc, errors.ClientError):
        return _client_error(exc)
    if isinstance(exc, errors.ConnectTimeoutError | errors.ReadTimeoutError | TimeoutError):
        return PublishError(_short(f"s3 timed out: {exc or type(exc).__name__}"), retryable=True)
    if isinstance(exc, errors.ConnectionError | errors.HTTPClientError):
        return PublishError(_short(f"s3 connection failed: {exc}"), retryable=True)
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        detail = str(exc) or type(exc).__name__
        return PublishError(_short(f"s3 connection failed: {detail}"), retryable=True)
    if isinstance(exc, errors.NoCredentialsError | errors.PartialCredentialsError):
        return PublishError(_short(f"s3 credentials: {exc}"), retryable=False)
    if isinstance(exc, errors.ParamValidationError):
        return PublishError(_short(f"s3 rejected the request: {exc}"), retryable=False)
    return PublishError(_short(f"s3 error: {type(exc).__name__}: {exc}"), retryable=False)
