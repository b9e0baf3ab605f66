"""The chat upsert bench (`python bench/chat_upsert.py`), one module per concept.

`config` (the run's parameters and targets), `script` (the upserts an executor sends for
one execution), `load` (driving them with calls in flight), `ceiling` (the bare grpc.aio +
asyncpg server to compare with), `cpu` (/proc accounting), `measurement` (one server's
numbers), `phase` (warm up and measure one server), `report` (the results) and `run` (the
wiring). Imported as `chat_upsert_bench` by `bench/chat_upsert.py`, the way the benches
import `harness`.
"""
