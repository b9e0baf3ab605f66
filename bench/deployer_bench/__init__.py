"""The deployer bench (`python bench/deployer.py`), one module per concept.

`config` (the run's parameters), `artifact` (the files every deployment carries), `load`
(the Deploy calls), `tables` (what the bench reads from the deployer's tables, and the waits
on it), `cpu` (/proc accounting), `checks` (what must hold after a configuration), `results`
(one configuration's numbers), `phase` (one configuration: database, chat, deployers, load),
`report` (the results) and `run` (both configurations). Imported as `deployer_bench` by
`bench/deployer.py`, the way the benches import `harness`.
"""
