"""The PostgreSQL function names the domain's enum numbers once, as constants; each must be
the number the domain gives it, or the two paths would disagree on every write."""

from __future__ import annotations

import re

import pytest

from appforge.services.chat import domain, sql
from appforge.services.common import flow

FUNCTION = "chat_upsert_assistant_v2"
CONSTANT = re.compile(
    r"^\s*(c_\w+)\s+CONSTANT\s+smallint\s*:=\s*(\d+);\s*--\s*(\w+)\.(\w+)\s*$", re.MULTILINE
)
ENUMS = {
    "ItemKind": flow.ItemKind,
    "ToolStatus": flow.ToolStatus,
    "Role": domain.Role,
    "MessageStatus": domain.MessageStatus,
}
CONSTANTS = CONSTANT.findall(sql.load(FUNCTION))


def test_the_function_declares_its_enum_numbers_as_constants() -> None:
    names = {name for name, *_ in CONSTANTS}
    assert {"c_kind_message", "c_kind_tools", "c_role_assistant", "c_tool_terminal"} <= names
    # No bare enum number is compared anywhere else in the body.
    body = sql.load(FUNCTION).split("BEGIN", 1)[1]
    assert not re.search(r"(status|kind|role)\s*(=|<>|>=|<=|>|<)\s*\d", body)


@pytest.mark.parametrize(("name", "value", "enum", "member"), CONSTANTS, ids=lambda v: str(v))
def test_each_constant_is_the_domain_number(name: str, value: str, enum: str, member: str) -> None:
    assert int(value) == ENUMS[enum][member], f"{name} in {FUNCTION}.sql"


def test_the_first_terminal_status_is_the_lowest_terminal_one() -> None:
    # The function tests `status >= c_tool_terminal` for "terminal".
    terminal = [s for s in flow.ToolStatus if s.terminal]
    assert min(terminal) == flow.ToolStatus.SUCCEEDED
    assert all(s >= flow.ToolStatus.SUCCEEDED for s in terminal)
    assert all(s < flow.ToolStatus.SUCCEEDED for s in flow.ToolStatus if not s.terminal)


def test_the_function_name_carries_its_version() -> None:
    text = sql.load(FUNCTION)
    assert f"CREATE FUNCTION {FUNCTION}(" in text
    assert "CREATE OR REPLACE" not in text  # a changed function is a new version, not a swap
