"""Well-known protobuf types every service builds: timestamps and structs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2


def timestamp(us: int) -> timestamp_pb2.Timestamp:
    """A Timestamp from microseconds since the epoch."""
    out = timestamp_pb2.Timestamp()
    out.FromMicroseconds(us)
    return out


def struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    """A Struct holding JSON-shaped `values`."""
    out = struct_pb2.Struct()
    out.update(dict(values))
    return out
