"""The chat service's Prometheus metrics, named in one place (served with every RPC's
by `appforge.services.common.metrics.serve_metrics`)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

ASSISTANT_UPSERTS: Final = Counter(
    "appforge_chat_assistant_upserts", "UpsertAssistantMessage calls that were applied."
)
ASSISTANT_MESSAGES_CREATED: Final = Counter(
    "appforge_chat_assistant_messages_created",
    "Assistant messages created (one per execution: the first upsert creates it).",
)
WATCH_RESYNCS: Final = Counter(
    "appforge_chat_watch_resyncs",
    "WatchApp streams that fell behind (their buffer overflowed) and caught up in snapshots.",
)
WRITE_BATCHES: Final = Histogram(
    "appforge_chat_write_batch_size",
    "Assistant-message writes per PostgreSQL transaction (APPFORGE_WRITE_BATCHES).",
    buckets=(1, 2, 4, 8, 16, 32),
)
WRITE_BATCHES_RETRIED: Final = Counter(
    "appforge_chat_write_batches_retried",
    "Batches rolled back (one write refused, or a lost lock race) and sent again write by write.",
)
