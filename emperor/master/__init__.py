"""The master process: owns a vassal's sockets, keeps its workers alive, reloads.

`process` holds its loop and signal table. A re-executed master image imports
only this package, `worker`, `wire` and the shared modules (tests/test_layout.py).
"""
