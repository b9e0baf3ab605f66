"""The deployer bench (`python bench/deployer.py`), one module per concept.

`config` (the run's parameters), `artifact` (the files every deployment carries), `load`
(the Deploy calls), `tables` (what the bench reads from the deployer's tables, and the waits
on it), `cpu` (/proc accounting), `checks` (what must hold after a configuration), `results`
(one configuration's numbers), `phase` (one configuration: database, chat, deployers, load),
`report` (the results) and `run` (both configurations).

`--mode noop` adds procrastinate beside the deployers: `procrastinate_app` (its app, the
no-op task and the worker processes' entry point), `procrastinate_load` (the defers),
`procrastinate_tables` (what the bench reads from procrastinate's tables, and the waits on
it), `procrastinate_results` (one procrastinate configuration's numbers and checks),
`procrastinate_phase` (one procrastinate configuration: database, schema, workers, defers)
and `compare` (the side-by-side). `--mode wake` is `wake` (a replica whose workers are all
busy, another that takes its Deploys; its report too). Imported as `deployer_bench` by
`bench/deployer.py`, the way the benches import `harness`.
"""
