#!/usr/bin/env python3
"""Hold about --total TCP sockets on loopback in the current network namespace, the way one
pod of a node would: one listener, ESTABLISHED pairs, and --close-wait server ends kept open
after their clients closed (CLOSE_WAIT, with the orphaned client ends in FIN_WAIT2).

Run inside a namespace (bench/netns.sh does, with tcp_fin_timeout raised so the FIN_WAIT2
ends stay):

    ip netns exec cwbench-ns-7 python3 bench/nsworkload.py --total 1000 --ready-file F

When every socket is in place, --ready-file is written; the process then sleeps until it is
killed (it dies with its parent too, through PR_SET_PDEATHSIG).
"""

import argparse
import ctypes
import signal
import socket
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--total", type=int, default=1000)
    ap.add_argument("--close-wait", type=int, default=50)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--ready-file", required=True)
    a = ap.parse_args()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", a.port))
    lst.listen(4096)
    pairs = max(0, (a.total - 1) // 2)
    held = []
    leaked = []
    for i in range(pairs):
        c = socket.create_connection(("127.0.0.1", a.port))
        s, _ = lst.accept()
        if i < a.close_wait:
            c.close()  # the server end goes to CLOSE_WAIT and is kept: the leak
            leaked.append(s)
        else:
            held.extend((c, s))
    # Every leaked end has seen its peer's FIN before we say ready.
    deadline = time.time() + 30
    while time.time() < deadline:
        if all(s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"" for s in leaked):
            break
        time.sleep(0.01)
    with open(a.ready_file, "w") as f:
        f.write(f"{len(held) + len(leaked) + 1 + len(leaked)}\n")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
