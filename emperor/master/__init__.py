"""The master process: owns a vassal's sockets, keeps its workers alive, reloads.

`process` holds its signal table and start-up; `loop` the event loop and the `Part`
interface every other piece (reload, touch, stats, daemons...) plugs into. A re-executed master image imports
only this package, `worker`, `wire` and the shared modules (tests/test_layout.py).
"""
