"""The wires between the processes, each declared once and imported by both of its ends.

- `channel`: emperor <-> master, one socketpair per vassal (lines, a few descriptors);
- `handoff`: a master -> its own next image across `execve` (environment + inherited fds);
- `notify`: worker -> master, one pipe of fixed-size records;
- `scoreboard`: worker -> master, counters in shared memory;
- `control`: command line -> emperor, the control socket's requests and answers.
"""
