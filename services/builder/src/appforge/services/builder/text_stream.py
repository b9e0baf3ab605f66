"""A turn's text, written to the flow while the model is still generating it.

A model hands its text over as it comes (a token, a word). One upsert per token would cost
chat a write per token, so `TextStream` coalesces: text that arrives waits at most
`FlushPolicy.interval` seconds before it is written, or not at all once `max_chars` are
waiting, and what is left is written when the turn ends, before its tool batch. Each write
is one piece of the item's text at its offset (`FlowItem.text_offset`): chat appends it, a
replayed write changes nothing, and the text is never rewritten. The item's seq and stamp
are allocated when its first text arrives, so items stay in the order they began.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from appforge.services.builder.domain import TextClip, text_item
from appforge.services.builder.models.base import ModelError
from appforge.services.common.flow import FlowItem

Allocate = Callable[[], Awaitable[tuple[int, int]]]  # a new item's (seq, stamp)
WritePiece = Callable[[FlowItem], Awaitable[None]]  # chat first, then Build clients
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class FlushPolicy:
    """When streamed text is written: `interval` seconds after it began to wait, or at once
    when `max_chars` characters are waiting (APPFORGE_STREAM_FLUSH_MS, _CHARS)."""

    interval: float = 0.05
    max_chars: int = 256

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.max_chars < 1:
            raise ValueError(f"a flush policy needs a positive interval and size: {self}")


class TextStream:
    """The text item of one turn, written piece by piece as `add` receives it.

    `add` is the model's `on_text`. `finish` ends the turn: it checks the turn's text
    against what streamed, then writes the rest; without a text (the turn failed) it
    writes what had arrived. `close` stops the timer and writes nothing; a stream is
    closed once its turn is over, whichever way. A write that failed in the background is
    raised by the next `add` or by `finish`; its piece is sent again by the next write.
    """

    def __init__(
        self,
        *,
        allocate: Allocate,
        write: WritePiece,
        policy: FlushPolicy,
        limit_bytes: int,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._allocate = allocate
        self._write = write
        self.policy = policy
        self._sleep = sleep
        self._clip = TextClip(limit_bytes)
        self._received: list[str] = []  # the pieces as the model gave them
        self._slot: tuple[int, int] | None = None
        self._offset = 0  # characters written so far
        self._unsent = ""  # taken from the clip, its write not acknowledged yet
        self._lock = asyncio.Lock()  # one write at a time, so they land in offset order
        self._timer: asyncio.Task[None] | None = None
        self._sleeping = False
        self._closed = False
        self._error: Exception | None = None
        self.writes = 0

    @property
    def seq(self) -> int | None:
        """The item's seq, once its first text arrived."""
        return self._slot[0] if self._slot is not None else None

    @property
    def written(self) -> int:
        """Characters of the item's text written so far."""
        return self._offset

    async def add(self, piece: str) -> None:
        """Take a piece of the turn's text; write now if `max_chars` are waiting."""
        self._raise_failed_write()
        if not piece or self._closed:
            return
        self._received.append(piece)
        await self._receive(piece)
        if self._clip.pending_chars >= self.policy.max_chars:
            await self._flush()
        elif self._clip.pending_chars and (self._timer is None or self._timer.done()):
            self._timer = asyncio.create_task(self._flush_later(), name="text-stream-flush")

    async def finish(self, text: str | None = None) -> None:
        """The turn is over: write what is left.

        `text` is the turn's whole text; what did not stream of it is added first, and a
        text that does not start with what streamed is a `ModelError` (what was written
        cannot be taken back). None: the turn failed, keep what arrived.
        """
        await self.close()
        if text is not None:
            streamed = "".join(self._received)
            if not text.startswith(streamed):
                raise ModelError(
                    "the model's turn does not start with the text it streamed", retryable=False
                )
            if rest := text[len(streamed) :]:
                self._received.append(rest)
                await self._receive(rest)
        self._raise_failed_write()
        await self._flush(final=True)

    async def close(self) -> None:
        """Stop the timer: cancelled while it waits, awaited while it writes."""
        self._closed = True
        timer, self._timer = self._timer, None
        if timer is None:
            return
        if self._sleeping:
            timer.cancel()
        await asyncio.gather(timer, return_exceptions=True)

    async def _receive(self, piece: str) -> None:
        self._clip.add(piece)
        if self._slot is None:
            self._slot = await self._allocate()

    async def _flush_later(self) -> None:
        """Write what waits every `interval` while some waits (and the turn goes on)."""
        try:
            while not self._closed and self._clip.pending_chars:
                self._sleeping = True
                try:
                    await self._sleep(self.policy.interval)
                finally:
                    self._sleeping = False
                await self._flush()
        except Exception as exc:  # the model's next `add`, or `finish`, raises it
            self._error = exc

    async def _flush(self, *, final: bool = False) -> None:
        async with self._lock:
            piece = self._unsent + self._clip.take(final=final)
            if not piece or self._slot is None:
                return
            self._unsent = piece
            seq, stamp = self._slot
            await self._write(text_item(seq, stamp, piece, offset=self._offset))
            self._unsent = ""
            self._offset += len(piece)
            self.writes += 1

    def _raise_failed_write(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error
