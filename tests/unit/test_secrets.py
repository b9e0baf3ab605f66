"""`secrets`: what is registered from the environment, and its removal from text, from
nested values and from every log line whatever carried it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from appforge.services.common import secrets
from appforge.services.common.logging import JsonFormatter, LogfmtFormatter, get_logger


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    secrets.forget_all()
    yield
    secrets.forget_all()


def test_values_and_url_passwords_from_the_environment_are_redacted() -> None:
    secrets.register_env(
        {
            "OPENAI_API_KEY": "sk-abcdef123",
            "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI",
            "DATABASE_URL": "postgresql+asyncpg://app:s3cr3t-pw@db/appforge",
            "APPFORGE_LOG_LEVEL": "DEBUG",  # not a secret
            "REDIS_URL": "not a url at all: [",
        }
    )
    text = "key sk-abcdef123, aws wJalrXUtnFEMI, url postgresql://app:s3cr3t-pw@db, DEBUG"
    assert secrets.redact(text) == (
        "key [redacted], aws [redacted], url postgresql://app:[redacted]@db, DEBUG"
    )


def test_short_values_are_not_secrets_and_one_inside_another_goes_whole() -> None:
    secrets.register("pw")  # too short: it would redact ordinary words
    secrets.register("abcdef")
    secrets.register("sk-abcdef123")  # holds the one before: redacted whole, not in part
    assert secrets.redact("pw") == "pw"
    assert secrets.redact("key sk-abcdef123, part abcdef") == "key [redacted], part [redacted]"


@pytest.mark.parametrize("formatter", [LogfmtFormatter(), JsonFormatter()])
def test_no_log_line_carries_a_secret(
    formatter: logging.Formatter, caplog: pytest.LogCaptureFixture
) -> None:
    secrets.register("sk-abcdef123")
    with caplog.at_level(logging.INFO):
        try:
            raise RuntimeError("the endpoint said sk-abcdef123 is wrong")
        except RuntimeError:
            get_logger("test").exception("failed", detail="Bearer sk-abcdef123")
    [record] = caplog.records
    line = formatter.format(record)
    assert "sk-abcdef123" not in line and "[redacted]" in line
