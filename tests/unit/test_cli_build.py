"""What `appforge build` checks before it contacts any service, and how it prints on a pipe."""

from __future__ import annotations

import io

import pytest

from appforge.cli.build import validate_prompt
from appforge.cli.build_view import Progress, render
from appforge.cli.channels import console_for
from appforge.services.common.errors import InvalidArgument, LimitExceeded
from appforge.services.common.settings import Limits

LIMITS = Limits()
LIMIT = LIMITS.max_user_content_bytes


@pytest.mark.parametrize(
    "prompt", ["build a calculator", "x" * LIMIT, "é" * (LIMIT // 2)], ids=["short", "at", "utf8"]
)
def test_prompts_within_the_limits_pass(prompt: str) -> None:
    assert validate_prompt(prompt, LIMITS) == prompt


@pytest.mark.parametrize(
    ("prompt", "error", "needle"),
    [
        ("", InvalidArgument, "prompt: must not be empty"),
        (" \n\t ", InvalidArgument, "prompt: must not be empty"),
        ("x" * (LIMIT + 1), LimitExceeded, f"is {LIMIT + 1} bytes; the limit is {LIMIT} bytes"),
        ("é" * (LIMIT // 2 + 1), LimitExceeded, f"is {LIMIT + 2} bytes"),  # bytes, not chars
    ],
    ids=["empty", "blank", "one-byte-over", "utf8-over"],
)
def test_prompts_chat_would_refuse_are_refused(
    prompt: str, error: type[Exception], needle: str
) -> None:
    with pytest.raises(error, match=needle):
        validate_prompt(prompt, LIMITS)


def test_the_limit_comes_from_the_given_limits() -> None:
    with pytest.raises(LimitExceeded):
        validate_prompt("x" * 11, Limits(max_user_content_bytes=10))


def test_a_piped_live_view_does_not_wrap() -> None:
    from appforge.api.chat.v1 import chat_pb2

    out = io.StringIO()
    console = console_for(out)
    name = "app-" + "x" * 150
    console.print(render(Progress(app=chat_pb2.App(id="a", name=name), execution_id="e" * 40)))
    [line] = out.getvalue().splitlines()
    assert name in line and "e" * 40 in line
