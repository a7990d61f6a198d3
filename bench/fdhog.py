#!/usr/bin/env python3
"""Hold N non-socket fds (pipe ends) until killed, like a busy server's files and pipes.

usage: bench/fdhog.py N READY_FILE

cwdiag's /proc walk sees every process on the host: bench/side.sh starts two of these
outside the benchmark's namespace to check that the walk costs what attribution needs,
not what the host holds.
"""

import os
import resource
import signal
import sys

n, ready = int(sys.argv[1]), sys.argv[2]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 64), hard))
held = [os.pipe() for _ in range(n // 2)]
with open(ready, "w") as f:
    f.write(f"{2 * len(held)}\n")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    signal.pause()
