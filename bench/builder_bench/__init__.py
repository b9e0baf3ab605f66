"""The builder bench (`python bench/builder.py`), one module per concept.

`config` (the run's parameters), `script` (what a bench build says), `model` (the fake
OpenAI-compatible endpoint), `load` (pacer, tallies, Build calls), `baseline` (the same chat
traffic written directly), `watchers` (the WatchApp watcher processes), `bus` (the change
bus monitor), `cpu` (/proc accounting), `phase` (warm up, measure, drain), `report` (the
results) and `run` (the wiring). Imported as `builder_bench` by `bench/builder.py`, the way
the benches import `harness`.
"""
