"""The deadline of the RPC being served, carried to the calls it makes.

The server's interceptor records what is left of each incoming call's deadline (`serving`);
an outgoing call asks `bounded(its own timeout)` and gets the smaller of the two, so a
caller that gives up after 2 s never leaves this service waiting 30 s on another one on its
behalf. Work that outlives the RPC that started it (an execution, after Build returned its
first event) runs in a `detached()` context, bound by its own timeouts only.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

from appforge.services.common.errors import DeadlineExceeded

# Monotonic seconds at which the RPC being served must be answered; None: no deadline.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "appforge_incoming_deadline", default=None
)


def set_remaining(remaining: float | None) -> contextvars.Token[float | None]:
    """Record the incoming call's deadline, `remaining` seconds from now (None: none), for
    the rest of this context (each RPC is served in a task, and so a context, of its own)."""
    return _DEADLINE.set(None if remaining is None else time.monotonic() + remaining)


@contextmanager
def serving(remaining: float | None) -> Iterator[None]:
    """`set_remaining` for a block, restored after it."""
    token = set_remaining(remaining)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining() -> float | None:
    """Seconds left of the incoming deadline, None when there is none."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


def bounded(timeout: float) -> float:
    """The timeout for an outgoing call: `timeout`, or what is left of the incoming
    deadline when that is sooner. DeadlineExceeded when it has already passed."""
    left = remaining()
    if left is None:
        return timeout
    if left <= 0:
        raise DeadlineExceeded("the caller's deadline passed before the call could be made")
    return min(timeout, left)


def detached() -> contextvars.Context:
    """A copy of the current context without the incoming deadline: for a task that
    outlives the RPC that starts it."""
    context = contextvars.copy_context()
    context.run(_DEADLINE.set, None)
    return context
