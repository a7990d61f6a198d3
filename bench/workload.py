#!/usr/bin/env python3
"""Hold a real TCP workload of about N sockets on loopback for the cwdiag benchmark.

Run it inside a fresh network namespace (bench/run.sh does):

    ip netns exec cwbench-200000 python3 bench/workload.py --total 200000 --ready-file F

Socket mix (fractions of --total):
  * CLOSE_WAIT   --cw-frac (0.10): accepted server ends kept open after the client closed,
                 held by a few "leaker" processes;
  * FIN_WAIT2    the same number: the orphaned client ends of those connections (they
                 last tcp_fin_timeout; run.sh raises it to 600 s in the namespace);
  * TIME_WAIT    --tw-frac (0.15): short connections, client closes first, server closes
                 after reading EOF. TIME_WAIT lasts a fixed 60 s, so a churner process
                 keeps the population steady by making tw/60 new ones per second for the
                 whole run (like a real server with connection churn);
  * ESTABLISHED  the rest, as connected pairs (both ends held open); with --cw-mix 1 (the
                 default) the CLOSE_WAIT holders are filled up with such pairs too, made in
                 between, so their CLOSE_WAIT fds sit among live ones as in a real leaking
                 server; the CLOSE_WAIT holders are started last (highest pids);
  * LISTEN       one listener per holder process.

Sockets are spread over several processes so that none holds more than --max-fds fds
(the hard limit here is 20,000). Each holder connects to its own listener port, so every
destination sees at most ~18,500 connections; the ephemeral port range must be wide
(run.sh sets 10000-65535 in the namespace; listeners use ports below it).

When every holder is ready and the churner has run for --tw-warm seconds (so the
TIME_WAIT population has reached its steady state), a summary line is printed and
--ready-file is written. The process then stays until SIGTERM/SIGINT, and kills its
children on the way out (they also die with it through PR_SET_PDEATHSIG).
"""

import argparse
import ctypes
import json
import math
import os
import resource
import select
import signal
import socket
import sys
import time

HOST = "127.0.0.1"
LISTEN_PORT_BASE = 5000  # below the namespace's ephemeral range (10000-65535)
BATCH = 1000             # connects per accept round; well below the listen backlog
BACKLOG = 4096


def die_with_parent():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def raise_nofile():
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def make_listener(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(BACKLOG)
    return sock


def connect_batch(listener, n):
    """n connected (client, server) pairs on listener."""
    addr = listener.getsockname()
    clients = []
    for _ in range(n):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.connect(addr)
        clients.append(c)
    servers = [listener.accept()[0] for _ in range(n)]
    return clients, servers


def hold_close_wait(listener, count, pairs, out):
    """Accept `count` connections whose clients then close: our ends sit in CLOSE_WAIT.

    With pairs > 0 the process also holds that many healthy ESTABLISHED pairs, made in
    between, so that its CLOSE_WAIT fds are scattered among busy ones (a leaking server
    that also serves live connections)."""
    held = []
    cw_made = pairs_made = 0
    rounds = max(1, math.ceil(count / BATCH))
    while cw_made < count or pairs_made < pairs:
        n = min(BATCH, count - cw_made)
        if n:
            clients, servers = connect_batch(listener, n)
            for c in clients:
                c.close()  # client sends FIN: client -> FIN_WAIT2 (orphan), server -> CLOSE_WAIT
            held.extend(servers)
            cw_made += n
        m = min(math.ceil(pairs / rounds), pairs - pairs_made)
        while m > 0:
            k = min(BATCH, m)
            clients, servers = connect_batch(listener, k)
            held.extend(clients)
            held.extend(servers)
            pairs_made += k
            m -= k
    out.write(f"ok close_wait {cw_made} established {2 * pairs_made}\n")
    out.flush()
    return held


def hold_established(listener, pairs, out):
    held = []
    made = 0
    while made < pairs:
        n = min(BATCH, pairs - made)
        clients, servers = connect_batch(listener, n)
        held.extend(clients)
        held.extend(servers)
        made += n
    out.write(f"ok established {2 * made}\n")
    out.flush()
    return held


def churn_time_wait(listeners, target, warm, out):
    """Keep about `target` sockets in TIME_WAIT by making target/60 per second forever."""
    rate = target / 60.0
    start = time.monotonic()
    made = 0
    told = False
    i = 0
    addrs = [l.getsockname() for l in listeners]
    while True:
        now = time.monotonic() - start
        want = int(rate * now)
        while made < want:
            k = i % len(listeners)
            i += 1
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.connect(addrs[k])
            s = listeners[k].accept()[0]
            c.close()        # client closes first: it becomes the TIME_WAIT side
            s.recv(1)        # wait for the client's FIN (returns b"")
            s.close()        # server: LAST_ACK -> CLOSED; client: FIN_WAIT2 -> TIME_WAIT
            made += 1
        if not told and now >= warm:
            out.write(f"warm time_wait {made}\n")
            out.flush()
            told = True
        time.sleep(0.02)


def plan(args):
    n = args.total
    cw = round(n * args.cw_frac)
    tw = round(n * args.tw_frac) if args.tw_frac > 0 else 0
    cw_per = args.max_fds - BATCH - 50
    cw_procs = max(args.cw_procs, math.ceil(cw / cw_per)) if cw else 0
    churn_ports = max(1, math.ceil(tw / 20000)) if tw else 0
    pairs_per = (args.max_fds - 50) // 2
    # listeners: one per holder; estimate holder count to size the ESTABLISHED rest
    rest = n - 2 * cw - tw - cw_procs - churn_ports
    est_procs = max(1, math.ceil(rest / 2 / pairs_per))
    rest -= est_procs
    pairs = max(0, rest // 2)
    cw_amounts = split(cw, cw_procs) if cw_procs else []
    cw_pairs = []
    left = pairs
    for amount in cw_amounts:
        k = min(left, (cw_per - amount) // 2) if args.cw_mix else 0
        cw_pairs.append(k)
        left -= k
    est_procs = max(1, math.ceil(left / pairs_per)) if left else 0
    return {
        "total": n,
        "close_wait": cw,
        "fin_wait2": cw,
        "time_wait": tw,
        "established": 2 * pairs,
        "listen": cw_procs + est_procs + churn_ports,
        "cw_procs": cw_procs,
        "cw_amounts": cw_amounts,
        "cw_holder_pairs": cw_pairs,
        "est_procs": est_procs,
        "est_pairs": left,
        "churn_ports": churn_ports,
    }


def split(total, parts):
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total", type=int, required=True, help="about how many TCP sockets")
    ap.add_argument("--cw-frac", type=float, default=0.10)
    ap.add_argument("--tw-frac", type=float, default=0.15)
    ap.add_argument("--cw-procs", type=int, default=2, help="at least this many CLOSE_WAIT holders")
    ap.add_argument("--cw-mix", type=int, default=1,
                    help="1: CLOSE_WAIT holders also hold ESTABLISHED pairs (fill to --max-fds)")
    ap.add_argument("--max-fds", type=int, default=18500, help="fds per holder process")
    ap.add_argument("--tw-warm", type=float, default=62.0,
                    help="seconds of churn before ready (TIME_WAIT lives 60 s)")
    ap.add_argument("--ready-file", required=True)
    args = ap.parse_args()

    hard = raise_nofile()
    if hard < args.max_fds + 100:
        sys.exit(f"workload: fd hard limit {hard} is below --max-fds {args.max_fds} + 100")

    p = plan(args)
    print("workload: plan " + json.dumps(p), flush=True)

    port = LISTEN_PORT_BASE
    jobs = []  # (kind, listeners, amount)
    if p["time_wait"]:
        ls = [make_listener(port + i) for i in range(p["churn_ports"])]
        port += p["churn_ports"]
        jobs.append(("churn", ls, p["time_wait"]))
    # ESTABLISHED holders first and CLOSE_WAIT holders last, so that the leakers have the
    # highest pids: no help for a /proc walk that goes in pid order.
    for amount in split(p["est_pairs"], p["est_procs"]) if p["est_procs"] else []:
        jobs.append(("established", [make_listener(port)], amount))
        port += 1
    for amount, pairs in zip(p["cw_amounts"], p["cw_holder_pairs"]):
        jobs.append(("close_wait", [make_listener(port)], (amount, pairs)))
        port += 1

    children = {}  # pid -> (kind, read end)
    for kind, listeners, amount in jobs:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                die_with_parent()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                for _k, other, _a in jobs:
                    for l in other:
                        if l not in listeners:
                            l.close()
                out = os.fdopen(w, "w")
                if kind == "churn":
                    churn_time_wait(listeners, amount, args.tw_warm, out)
                elif kind == "close_wait":
                    held = hold_close_wait(listeners[0], amount[0], amount[1], out)
                else:
                    held = hold_established(listeners[0], amount, out)
                while True:
                    signal.pause()
            except BaseException as e:  # report any failure to the parent
                try:
                    os.write(w, f"err {kind} {e!r}\n".encode())
                finally:
                    os._exit(1)
        os.close(w)
        children[pid] = (kind, r)
    for _k, listeners, _a in jobs:
        for l in listeners:
            l.close()  # the holders keep their own copies

    def stop(_sig=None, _frame=None):
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    t0 = time.monotonic()
    pending = {r: (pid, kind) for pid, (kind, r) in children.items()}
    bufs = {r: b"" for r in pending}
    summary = {}
    while pending:
        ready, _, _ = select.select(list(pending), [], [], 5.0)
        for r in ready:
            chunk = os.read(r, 4096)
            pid, kind = pending[r]
            if not chunk:
                print(f"workload: {kind} holder {pid} died before it was ready", file=sys.stderr)
                stop()
            bufs[r] += chunk
            if b"\n" in bufs[r]:
                line = bufs[r].split(b"\n", 1)[0].decode()
                if line.startswith("err"):
                    print(f"workload: holder {pid}: {line}", file=sys.stderr, flush=True)
                    stop()
                words = line.split()
                for key, value in zip(words[1::2], words[2::2]):
                    summary[key] = summary.get(key, 0) + int(value)
                del pending[r]
        if pending and all(k == "churn" for _p, k in pending.values()) and "built_s" not in summary:
            summary["built_s"] = round(time.monotonic() - t0, 1)
            print(f"workload: holders ready after {summary['built_s']} s; "
                  f"waiting for the TIME_WAIT population to settle", flush=True)
    summary["ready_s"] = round(time.monotonic() - t0, 1)
    summary["holders"] = {str(pid): kind for pid, (kind, _r) in sorted(children.items())}
    with open(args.ready_file + ".tmp", "w") as f:
        json.dump({"plan": p, "summary": summary}, f)
    os.rename(args.ready_file + ".tmp", args.ready_file)
    print("workload: ready " + json.dumps(summary), flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
