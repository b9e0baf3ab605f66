"""The watcher processes' side: every token each watcher receives, with its latency.

The processes are builder_bench's (`watch_child`, driven by its `WatcherPool`: the bench
script with `--watch-child`, JSON lines on stdin/stdout) and their records merged by its
`merge_watchers`. `TokenWatchState` is builder_bench's `WatchState` with tokens where it
has flow items: each token of an item (its key `execution:seq:index`, its stamp the
emission time its word says) is recorded for a watcher when that watcher receives the
token's last character, so `WatchState.window` reports tokens as it reports items.

A watcher reads the BASIC view (the default): a message's first event is a snapshot, whose
text items hold their whole text so far; each later event a delta, whose text items hold
the appended piece at its offset. Text is read straight from those items, not through
`deltas.Messages`: what is measured is when the text arrives, and rebuilding the message
would only add the watcher's own work to every latency.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from builder_bench.watchers import WatchState
from builder_bench.watchers import watch_child as watch_apps

from appforge.api.chat.v1 import chat_pb2

from .tokens import TextTokens

NO_CHANGE = chat_pb2.MessageEvent()


class TokenWatchState(WatchState):
    """What one watcher process saw: every (watcher, token) arrival, every event."""

    def __init__(self, apps: Sequence[str], first: int) -> None:
        super().__init__(apps, first)
        self.texts = [TextTokens() for _ in apps]

    def on_event(self, watcher: int, event: chat_pb2.MessageEvent, received: int) -> None:
        # WatchState's own bookkeeping (the event's time, the watcher ready), without the
        # items it would record: an event with no change holds none.
        super().on_event(watcher, NO_CHANGE, received)
        if event.WhichOneof("change") == "delta":
            flow, execution_id = event.delta.items, event.delta.execution_id
        else:
            flow, execution_id = event.message.flow, event.message.execution_id
        texts = self.texts[watcher]
        for item in flow:
            if item.WhichOneof("body") != "message":
                continue
            part = item.message
            item_key = f"{execution_id}:{item.seq}"
            for index, latency in texts.feed(
                execution_id, item.seq, part.offset, part.text, received
            ):
                self._record(watcher, (item_key, index), received - latency, latency)

    def _record(self, watcher: int, key: tuple[str, int], stamp: int, latency: int) -> None:
        token = self.item_ids.get(key)
        if token is None:
            token = self.item_ids[key] = len(self.item_stamps)
            self.item_stamps.append(stamp)
            self.item_keys.append(f"{key[0]}:{key[1]}")
        self.s_item.append(token)
        self.s_watcher.append(watcher)
        self.s_latency.append(latency)

    def window(self, name: str, start: int, end: int) -> dict[str, Any]:
        """`WatchState.window` for tokens, with the text the watchers could not read and
        when the last token emitted in [start, end) arrived."""
        data = super().window(name, start, end)
        last = 0
        for token, latency in zip(self.s_item, self.s_latency, strict=True):
            stamp = self.item_stamps[token]
            if start <= stamp < end:
                last = max(last, stamp + latency)
        data["last_arrival_us"] = last
        data["gaps"] = sum(texts.gaps for texts in self.texts)
        data["foreign"] = sum(texts.foreign for texts in self.texts)
        return data


async def watch_child(chat_address: str, apps: Sequence[str], first: int) -> None:
    """A watcher process: builder_bench's, recording tokens (`TokenWatchState`)."""
    await watch_apps(chat_address, apps, first, TokenWatchState)
