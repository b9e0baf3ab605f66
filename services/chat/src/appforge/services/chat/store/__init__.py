"""The chat service's tables and every query it runs.

Concurrency safety comes from the database: a unique key on `execution_id` with
`INSERT … ON CONFLICT DO NOTHING` creates an execution's message exactly once, and the
message row lock (`SELECT … FOR UPDATE`) serialises every later write to it. Each app
row carries a change counter bumped inside the writing transaction, so change cursors
are dense and commit in order (see `ChatService.watch_app`).
"""

from __future__ import annotations

from appforge.services.chat.store.messages import MessageStore
from appforge.services.chat.store.tables import apps, flow_items, messages, metadata, tool_calls

__all__ = ["MessageStore", "apps", "flow_items", "messages", "metadata", "tool_calls"]
