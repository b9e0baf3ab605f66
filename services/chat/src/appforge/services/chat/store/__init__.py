"""The chat service's tables and every query it runs, one module per concept.

- `tables`: the tables (the migrations build exactly these); `rows`: rows <-> domain values.
- `apps`: apps and each app's change counter, bumped inside every writing transaction, so
  change cursors are dense and commit in order (see `ChatService.watch_app`).
- `user_messages`: user messages, idempotent by `request_id`.
- `assistant` (SQLAlchemy) and `pg_writer` (PostgreSQL, one statement): the one assistant
  message per execution, created exactly once by a unique key on `execution_id` with
  `INSERT … ON CONFLICT DO NOTHING` and serialised by the message's row lock.
- `reads`: messages with their flows; `messages`: `MessageStore`, which ties them together.
"""

from __future__ import annotations

from appforge.services.chat.store.messages import MessageStore
from appforge.services.chat.store.tables import apps, flow_items, messages, metadata, tool_calls

__all__ = ["MessageStore", "apps", "flow_items", "messages", "metadata", "tool_calls"]
