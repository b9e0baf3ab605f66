"""Reaching the services from the CLI: channels that reconnect soon, a bounded wait for a
connection, and a console that does not wrap piped output. Shared by `build` and `inspect`."""

from __future__ import annotations

import asyncio
from typing import TextIO

import grpc
from rich.console import Console

# Reconnect soon after a service comes back (gRPC's default backoff grows to two minutes).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
_PIPE_WIDTH = 100_000  # piped output is not wrapped, so ids and URLs stay on one line


class Unreachable(Exception):
    """A service could not be connected to in time: exit 3 with its address."""


def console_for(out: TextIO) -> Console:
    """A console on `out` that wraps to the terminal, and not at all on a pipe (ids and URLs
    stay whole for whoever reads or greps the output)."""
    console = Console(file=out, highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console.width = _PIPE_WIDTH
    return console


async def connect(
    channel: grpc.aio.Channel,
    who: str,
    within: float,
    *,
    fail_fast: bool,
    grace: float | None = None,
) -> None:
    """Until the channel is connected; `Unreachable` naming `who` after `within` seconds (what
    is left of a `grace` that began earlier, when one is given), or as soon as a connection
    fails when `fail_fast` (a service never reached: no point waiting for a refused port)."""

    async def ready() -> None:
        state = channel.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.READY:
            if fail_fast and state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                raise Unreachable(f"{who}: cannot be reached (the connection failed)")
            await channel.wait_for_state_change(state)
            state = channel.get_state(try_to_connect=True)

    try:
        await asyncio.wait_for(ready(), max(within, 0.0))
    except TimeoutError:
        seconds = within if grace is None else grace
        message = f"{who}: cannot be reached (no connection within {seconds:g} s)"
        raise Unreachable(message) from None
