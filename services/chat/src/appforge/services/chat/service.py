"""Chat use cases: take domain values, use the store and the bus, return domain values."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Protocol

from appforge.services.chat.domain import (
    App,
    AssistantUpsert,
    Change,
    DeltaChanged,
    Message,
    MessageChanged,
    MessageView,
    created_message,
)
from appforge.services.chat.metrics import (
    ASSISTANT_MESSAGES_CREATED,
    ASSISTANT_UPSERTS,
    WATCH_RESYNCS,
)
from appforge.services.chat.store import MessageStore
from appforge.services.chat.validation import (
    optional_id,
    require_id,
    require_name,
    validate_upsert,
    validate_user_content,
)
from appforge.services.common import keys
from appforge.services.common.bus import Bus
from appforge.services.common.errors import InvalidArgument
from appforge.services.common.logging import get_logger
from appforge.services.common.settings import Settings

log = get_logger(__name__)

CATCH_UP_PAGE = 200
# Writes to one app commit in cursor order but reach the bus in whatever order their
# coroutines resume. A watcher holds early events this long (or this many) for the gap
# to fill before it reads the database instead.
REORDER_WAIT_S = 0.05
REORDER_MAX = 64
# How many messages a watcher remembers the version of. A message it forgot arrives as a
# snapshot again: memory per watcher stays bounded however long the app's history.
SEEN_MAX = 4096


class ChangeCodec(Protocol):
    """How changes travel on the bus between processes (the bootstrap picks one).

    `encode` runs once per change, in the writer; `decode` once per payload and process,
    whatever the number of watchers, and may return its own kind of `Change` so that
    watchers relay it without converting it again. `None` means "not a change": the
    watcher resyncs from the database.
    """

    def encode(self, change: MessageChanged | DeltaChanged) -> bytes: ...

    def decode(self, payload: bytes) -> Change | None: ...


class ChatService:
    """Apps and their messages; exactly one assistant message per execution."""

    def __init__(
        self, store: MessageStore, bus: Bus, settings: Settings, *, changes: ChangeCodec
    ) -> None:
        self.store = store
        self.bus = bus
        self.changes = changes
        self.settings = settings
        self.limits = settings.limits

    async def create_app(self, team_id: str, name: str, *, return_existing: bool = False) -> App:
        team_id = require_id(team_id, "team_id", self.limits)
        app = await self.store.create_app(
            team_id, require_name(name, "name", self.limits), return_existing=return_existing
        )
        log.info("app_created", app_id=app.id, team_id=team_id)
        return app

    async def get_app(self, app_id: str) -> App:
        return await self.store.get_app(require_id(app_id, "app_id", self.limits))

    async def post_user_message(self, app_id: str, content: str, request_id: str) -> Message:
        require_id(app_id, "app_id", self.limits)
        validate_user_content(content, self.limits)
        key = optional_id(request_id, "request_id", self.limits)
        message, created = await self.store.post_user_message(app_id, content, key)
        if created:
            log.info("user_message_posted", app_id=app_id, message_id=message.id)
            await self._publish(message, MessageChanged(cursor=message.cursor, message=message))
        return message

    async def upsert_assistant(
        self, upsert: AssistantUpsert, view: MessageView = MessageView.BASIC
    ) -> Message:
        """Apply the upsert; the message after it, whole with FULL, else without its flow.

        Watchers are sent what changed: the message whole when this write created it
        (its flow is then exactly this write's), else the delta.
        """
        upsert = validate_upsert(upsert, self.limits)
        result = await self.store.upsert_assistant(upsert, view)
        message = result.message
        log.debug(
            "assistant_message_upserted",
            execution_id=upsert.execution_id,
            message_id=message.id,
            version=message.version,
            changed=result.changed,
        )
        ASSISTANT_UPSERTS.inc()
        if result.delta is None:
            return message
        change: MessageChanged | DeltaChanged
        if result.created:
            ASSISTANT_MESSAGES_CREATED.inc()
            change = MessageChanged(
                cursor=message.cursor, message=created_message(message, result.delta)
            )
        else:
            change = DeltaChanged(cursor=message.cursor, delta=result.delta)
        await self._publish(message, change)
        return message

    async def get_message(self, message_id: str) -> Message:
        return await self.store.get_message(require_id(message_id, "message_id", self.limits))

    async def get_message_by_execution(self, execution_id: str) -> Message:
        return await self.store.get_message_by_execution(
            require_id(execution_id, "execution_id", self.limits)
        )

    async def list_messages(
        self, app_id: str, page_size: int, page_token: str
    ) -> tuple[list[Message], str]:
        """One page of an app's messages, oldest first, and the next page's token."""
        require_id(app_id, "app_id", self.limits)
        if page_size < 0 or page_size > self.limits.max_page_size:
            raise InvalidArgument(
                f"must be between 0 and {self.limits.max_page_size}", field="page_size"
            )
        size = page_size or self.limits.default_page_size
        after = _decode_page_token(page_token, app_id) if page_token else None
        page = await self.store.list_messages(app_id, after, size + 1)
        if len(page) <= size:
            return page, ""
        page = page[:size]
        return page, _encode_page_token(app_id, page[-1])

    async def watch_app(self, app_id: str, after_cursor: int) -> AsyncIterator[Change]:
        """Every message changed after `after_cursor` (a snapshot of its latest state), then
        live changes: each message's first change a snapshot, deltas after it.

        Cursors are dense per app and commit in order, so a live change whose cursor is
        exactly one past the last one sent can be forwarded as is. Changes that arrive
        early are held until the gap fills (at most REORDER_WAIT_S); a gap that stays,
        a resync marker (the watcher fell behind and its buffer overflowed) or a quiet
        poll interval triggers a catch-up from the database, in snapshots.

        Live changes are relayed as `self.changes` decoded them, once per process however
        many watchers there are: fan-out costs no conversion.
        """
        require_id(app_id, "app_id", self.limits)
        if after_cursor < 0:
            raise InvalidArgument("must not be negative", field="after_cursor")
        await self.store.get_app(app_id)
        last = after_cursor
        seen = _Seen(SEEN_MAX)
        channel = keys.app_changes_channel(app_id)
        async with self.bus.subscribe(channel, size=self.settings.watch_buffer) as subscription:
            async for replayed in self._catch_up(app_id, last, seen):
                last = replayed.cursor
                yield replayed
            early: dict[int, Change] = {}
            loop = asyncio.get_running_loop()
            gap_deadline = 0.0
            while True:
                payload, delivered = None, False
                if early:
                    wait = max(0.0, gap_deadline - loop.time())
                else:
                    wait = self.settings.watch_poll_interval
                # asyncio.timeout, not wait_for: on 3.11, wait_for can swallow a
                # cancellation that races the queue, and the stream would outlive its call.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        payload = await subscription.get()
                        delivered = True
                if delivered and payload is None:
                    # This watcher's buffer overflowed (it reads slower than the app
                    # changes): its backlog was dropped, it catches up in snapshots.
                    WATCH_RESYNCS.inc()
                    log.info("watch_fell_behind", app_id=app_id, cursor=last)
                change = self.changes.decode(payload) if payload is not None else None
                if change is not None:
                    if change.cursor > last:
                        if not early:
                            gap_deadline = loop.time() + REORDER_WAIT_S
                        early[change.cursor] = change
                    while last + 1 in early:
                        change = early.pop(last + 1)
                        last = change.cursor
                        shown = await self._as_seen(change, seen)
                        if shown is not None:
                            yield shown
                    if len(early) < REORDER_MAX:
                        continue
                # A gap that did not fill in time, a resync marker, a bad payload or a
                # quiet poll interval: read what was missed from the database.
                early.clear()
                async for missed in self._catch_up(app_id, last, seen):
                    last = missed.cursor
                    yield missed

    async def _as_seen(self, change: Change, seen: _Seen) -> Change | None:
        """What a watcher that saw `seen` is sent for `change`: the change itself, nothing
        (it already has that version), or a snapshot (a delta of a message it has not
        seen, or of a version after the one it has)."""
        known = seen.get(change.message_id)
        if known is not None and change.version <= known:
            return None
        if change.is_delta and known != change.version - 1:
            message = await self.store.get_message(change.message_id)
            seen.put(message.id, message.version)
            return MessageChanged(cursor=change.cursor, message=message)
        seen.put(change.message_id, change.version)
        return change

    async def _catch_up(self, app_id: str, after: int, seen: _Seen) -> AsyncIterator[Change]:
        while True:
            page = await self.store.changed_after(app_id, after, CATCH_UP_PAGE)
            for message in page:
                seen.put(message.id, message.version)
                yield MessageChanged(cursor=message.cursor, message=message)
            if len(page) < CATCH_UP_PAGE:
                return
            after = page[-1].cursor

    async def _publish(self, message: Message, change: MessageChanged | DeltaChanged) -> None:
        # The change is committed; a lost publish only delays watchers until their next
        # catch-up, so it must never fail the write.
        try:
            payload = self.changes.encode(change)
            await self.bus.publish(keys.app_changes_channel(message.app_id), payload)
        except Exception as exc:
            log.warning(
                "publish_failed",
                app_id=message.app_id,
                execution_id=message.execution_id or "",
                error=repr(exc),
            )


class _Seen:
    """The version of each message a watcher was last sent, for at most `size` messages
    (the least recently changed are forgotten first)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._versions: OrderedDict[str, int] = OrderedDict()

    def get(self, message_id: str) -> int | None:
        return self._versions.get(message_id)

    def put(self, message_id: str, version: int) -> None:
        self._versions[message_id] = version
        self._versions.move_to_end(message_id)
        if len(self._versions) > self.size:
            self._versions.popitem(last=False)


def _encode_page_token(app_id: str, last: Message) -> str:
    raw = json.dumps([app_id, last.created_us, last.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


MAX_PAGE_TOKEN = 512


def _decode_page_token(token: str, app_id: str) -> tuple[int, str]:
    if len(token) > MAX_PAGE_TOKEN:
        raise InvalidArgument("is not a page token of this app", field="page_token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        token_app, created_us, message_id = json.loads(raw)
        if (
            token_app != app_id
            or not isinstance(created_us, int)
            or not isinstance(message_id, str)
        ):
            raise ValueError(token)
    except (ValueError, TypeError, RecursionError, binascii.Error, json.JSONDecodeError):
        raise InvalidArgument("is not a page token of this app", field="page_token") from None
    return created_us, message_id
