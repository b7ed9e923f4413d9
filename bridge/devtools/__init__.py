"""Development tools, outside the service: the local agent, the phone simulator, call replay, the
scaled clock and the fake Realtime server the tests and benchmarks share.

No production module imports this package (tests/test_import_graph.py checks it); the CLI's
`agent`, `call`, `demo` and `replay` commands, and `serve` with VOICE_BRIDGE_UPSTREAM=local, import
it inside their command functions.
"""
