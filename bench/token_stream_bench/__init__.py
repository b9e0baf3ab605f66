"""The token streaming bench (`python bench/token_stream.py`), one module per concept.

`config` (the run's parameters and targets), `tokens` (a token's text says when it was
emitted; reading tokens out of text pieces), `endpoint` (the fake OpenAI-compatible model
that streams them), `services` (chat, the deployer and the builder as OS processes),
`builds` (the Build calls and what their streams carried), `watchers` (the WatchApp watcher
processes' token records), `window` (the measured stream: CPU, py-spy, progress), `report`
(the results) and `run` (the wiring). It reuses `builder_bench` for the watcher pool, the
latency histograms, the pacer and the /proc accounting. Imported as `token_stream_bench` by
`bench/token_stream.py`, the way the benches import `harness`.
"""
