"""The emperor process: watches a vassals directory and keeps one master per file.

`process` holds its loop and signal table; the rest are its collaborators
(watching, launching masters, the control socket, metrics, systemd).
"""
