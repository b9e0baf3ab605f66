"""Each domain enum is its protobuf enum, value for value and name for name.

The converters cast between them by number (`int(status)`), so a value added, removed or
renumbered on one side only would silently turn into another state on the wire; this pins them.
"""

from __future__ import annotations

from enum import IntEnum

import pytest
from google.protobuf.descriptor import EnumDescriptor

from appforge.api.builder.v1 import builder_pb2
from appforge.api.chat.v1 import chat_pb2
from appforge.api.deployer.v1 import deployer_pb2
from appforge.api.flow.v1 import flow_pb2
from appforge.services.builder.domain import ExecutionStatus
from appforge.services.builder.domain import MessageStatus as BuilderMessageStatus
from appforge.services.chat.domain import MessageStatus, Role
from appforge.services.common.flow import ToolStatus
from appforge.services.deployer.domain import AttemptOutcome, DeploymentStatus

PAIRS: list[tuple[type[IntEnum], EnumDescriptor, str]] = [
    (ToolStatus, flow_pb2.DESCRIPTOR.enum_types_by_name["ToolStatus"], "TOOL_STATUS_"),
    (Role, chat_pb2.DESCRIPTOR.enum_types_by_name["Role"], "ROLE_"),
    (MessageStatus, chat_pb2.DESCRIPTOR.enum_types_by_name["MessageStatus"], "MESSAGE_STATUS_"),
    # The builder's own name for the statuses it writes to chat (it cannot import chat).
    (
        BuilderMessageStatus,
        chat_pb2.DESCRIPTOR.enum_types_by_name["MessageStatus"],
        "MESSAGE_STATUS_",
    ),
    (
        ExecutionStatus,
        builder_pb2.DESCRIPTOR.enum_types_by_name["ExecutionStatus"],
        "EXECUTION_STATUS_",
    ),
    (
        DeploymentStatus,
        deployer_pb2.DESCRIPTOR.enum_types_by_name["DeploymentStatus"],
        "DEPLOYMENT_STATUS_",
    ),
    (
        AttemptOutcome,
        deployer_pb2.DESCRIPTOR.enum_types_by_name["AttemptOutcome"],
        "ATTEMPT_OUTCOME_",
    ),
]


@pytest.mark.parametrize(
    ("domain", "proto", "prefix"),
    [pytest.param(*pair, id=f"{pair[0].__module__}.{pair[0].__name__}") for pair in PAIRS],
)
def test_domain_enum_is_the_proto_enum(
    domain: type[IntEnum], proto: EnumDescriptor, prefix: str
) -> None:
    on_the_wire = {
        value.name.removeprefix(prefix): value.number
        for value in proto.values
        if value.number != 0  # UNSPECIFIED: never a domain state
    }
    assert {member.name: member.value for member in domain} == on_the_wire
    assert proto.values_by_number[0].name == f"{prefix}UNSPECIFIED"
