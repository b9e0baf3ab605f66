"""The cycle bench (`python bench/cycle.py`), one module per concept.

`config` (the run's parameters), `samples` (what one cycle measured, and its statistics),
`cycles` (a build cycle, a deploy cycle, and running them), `cpu` (/proc accounting),
`report` (the results) and `run` (the wiring). Imported as `cycle_bench` by `bench/cycle.py`,
the way the benches import `harness`.
"""
