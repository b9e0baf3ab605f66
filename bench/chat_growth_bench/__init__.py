"""The chat growth bench (`python bench/chat_growth.py`), one module per concept.

`config` (the run's parameters and targets), `calls` (the upserts of the one execution),
`watcher` (the WatchApp watcher process and the bench's handle on it), `cpu` (/proc
accounting), `measure` (the calls sent one at a time, timed, CPU sampled around the
windows), `check` (the watcher's message against chat's), `report` (the results) and `run`
(the wiring). Imported as `chat_growth_bench` by `bench/chat_growth.py`, the way the benches
import `harness`.
"""
