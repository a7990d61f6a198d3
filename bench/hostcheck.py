#!/usr/bin/env python3
"""What else on the host could skew the benchmark: print one JSON line.

usage: bench/hostcheck.py READY_JSON WORKLOAD_PID

cwdiag and `ss -p`/`netstat -p` walk every process's fds, and every sock_diag dump walks the
host's whole TCP table (all namespaces), so fds and sockets that are not the workload's, and
CPU used by others, all change the figures. Reports:
  other_fds        fds held by processes outside the workload
  big_holders      those of them holding more than 1000 fds (pid, comm, fds)
  netns            named network namespaces other than the benchmark's
  busy_pct         per cent of all CPU time busy over one second (the churner included)
"""

import json
import os
import subprocess
import sys
import time


def cpu_busy():
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        idle = v[3] + v[4]
        return sum(v) - idle, idle

    b1, i1 = sample()
    time.sleep(1)
    b2, i2 = sample()
    d = (b2 - b1) + (i2 - i1)
    return round(100 * (b2 - b1) / d) if d else 0


def main():
    ready, wpid = sys.argv[1], int(sys.argv[2])
    with open(ready) as f:
        holders = json.load(f)["summary"]["holders"]
    ours = {wpid, os.getpid(), os.getppid()} | {int(p) for p in holders}
    other, big = 0, []
    for e in os.listdir("/proc"):
        if not e.isdigit() or int(e) in ours:
            continue
        try:
            n = len(os.listdir(f"/proc/{e}/fd"))
        except OSError:
            continue
        other += n
        if n > 1000:
            try:
                with open(f"/proc/{e}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                comm = "?"
            big.append({"pid": int(e), "comm": comm, "fds": n})
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
    names = [line.split()[0] for line in ns if line.strip()]
    mine = os.environ.get("NS", "")
    print(json.dumps({
        "other_fds": other,
        "big_holders": big,
        "netns": [n for n in names if n != mine],
        "busy_pct": cpu_busy(),
    }))


if __name__ == "__main__":
    main()
