#!/usr/bin/env bash
# Benchmark of `cwdiag scan --all-netns` on a node-like host: many network namespaces of about
# PER_NS sockets each (one pod-like process per namespace: a listener, ESTABLISHED pairs and
# CW_PER_NS leaked CLOSE_WAIT server ends with their FIN_WAIT2 peers, bench/nsworkload.py).
#
# Run as root from the repo top:
#     bench/netns.sh                      # COUNTS="10 50 100" PER_NS=1000
#
# For each namespace count (ascending; namespaces are added to reach it), one hyperfine run
# times, side by side:
#   cwdiag scan --all-netns
#   ss -tan   in every namespace (nsenter --net=/run/netns/NAME; the host's own plain)
#   ss -tanp  in every namespace, the same way
# then `CWDIAG_TIMING=1 cwdiag scan --all-netns` once, to show what the attribution walk
# cost at that count. The results go into the "Many network namespaces" section of
# BENCHMARKS.md (between its markers; the rest of the file is left alone).
#
# Environment (defaults in brackets):
#   COUNTS [10 50 100]  namespace counts      PER_NS [1000] sockets per namespace
#   CW_PER_NS [50]      CLOSE_WAIT per ns     MIN_RUNS [3] MAX_RUNS [10] WARMUP [1] (hyperfine)
#   NICE [-15]          niceness of the timed commands
#   OUT [BENCHMARKS.md] report to update      KEEP [0] 1 = keep the raw results directory
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)

COUNTS=${COUNTS:-"10 50 100"}
PER_NS=${PER_NS:-1000}
CW_PER_NS=${CW_PER_NS:-50}
MIN_RUNS=${MIN_RUNS:-3}
MAX_RUNS=${MAX_RUNS:-10}
WARMUP=${WARMUP:-1}
NICE=${NICE:--15}
OUT=${OUT:-BENCHMARKS.md}
KEEP=${KEEP:-0}

log() { printf '[netns-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (network namespaces)"

CMDLINE="bench/netns.sh"
for v in COUNTS PER_NS CW_PER_NS MIN_RUNS MAX_RUNS WARMUP NICE; do
    if printenv "$v" >/dev/null; then CMDLINE="$v=\"${!v}\" $CMDLINE"; fi
done

need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
{ command -v ip && command -v ss; } >/dev/null || need+=(iproute2)
command -v nsenter >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

log "building cwdiag (release)"
cargo build --release --locked -q
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/cwdiag
[ -x "$BIN" ] || die "no binary at $BIN"

RAW=$(mktemp -d /tmp/cwdiag-netns-bench.XXXXXX)
PREFIX="cwbench-ns-$$"
made=()
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for n in "${made[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    if [ "$KEEP" = 1 ]; then log "raw results kept in $RAW"; else rm -rf "$RAW"; fi
}
trap cleanup EXIT

add_namespaces() { # up to $1 namespaces in all
    local want=$1 i name
    for ((i = ${#made[@]} + 1; i <= want; i++)); do
        name="$PREFIX-$i"
        ip netns add "$name"
        made+=("$name")
        ip -n "$name" link set lo up
        # The orphaned FIN_WAIT2 client ends must outlive the run.
        ip netns exec "$name" sysctl -qw net.ipv4.tcp_fin_timeout=3600
        ip netns exec "$name" python3 bench/nsworkload.py --total "$PER_NS" \
            --close-wait "$CW_PER_NS" --ready-file "$RAW/ready-$name" &
        pids+=($!)
    done
    local deadline=$((SECONDS + 120))
    for name in "${made[@]}"; do
        while [ ! -s "$RAW/ready-$name" ]; do
            [ $SECONDS -lt $deadline ] || die "workload in $name not ready"
            sleep 0.2
        done
    done
}

check_counts() { # every namespace holds what the workload made, as ss sees it
    local name cw
    for name in "${made[@]}"; do
        cw=$(nsenter --net="/run/netns/$name" ss -tanH state close-wait | wc -l)
        [ "$cw" -eq "$CW_PER_NS" ] || die "$name: ss sees $cw CLOSE_WAIT, want $CW_PER_NS"
    done
    local total
    total=$(for name in "${made[@]}"; do nsenter --net="/run/netns/$name" ss -tanH; done | wc -l)
    log "${#made[@]} namespaces, $total sockets in them (ss -tan)"
    echo "$total" >"$RAW/sockets-${#made[@]}"
}

for count in $COUNTS; do
    log "namespaces: $count"
    add_namespaces "$count"
    check_counts
    list="${made[*]}"
    loop() { # the ss command $1 run in the host and in every benchmark namespace
        printf 'ss %s >/dev/null; for n in %s; do nsenter --net=/run/netns/$n ss %s >/dev/null; done' \
            "$1" "$list" "$1"
    }
    nice -n "$NICE" hyperfine --style basic --min-runs "$MIN_RUNS" --max-runs "$MAX_RUNS" \
        --warmup "$WARMUP" --export-json "$RAW/hyperfine-$count.json" \
        -n "cwdiag scan --all-netns" "$BIN scan --all-netns >/dev/null" \
        -n "ss -tan in every namespace" "$(loop -tan)" \
        -n "ss -tanp in every namespace" "$(loop -tanp)" \
        >"$RAW/hyperfine-$count.log" 2>&1
    cat "$RAW/hyperfine-$count.log" >&2
    # Steps of three timed scans (the median of each goes in the report), and the fds the
    # attribution walk has to look through: every open fd on the host.
    for i in 1 2 3; do
        CWDIAG_TIMING=1 nice -n "$NICE" "$BIN" scan --all-netns 2>"$RAW/timing-$count-$i.txt" >/dev/null
    done
    grep 'all namespaces' "$RAW/timing-$count-1.txt" >&2 || true
    # (find fails on processes that exit while it looks: that is not an error here)
    { find /proc/[0-9]*/fd -mindepth 1 -maxdepth 1 2>/dev/null || true; } | wc -l >"$RAW/fds-$count"
done

python3 - "$RAW" "$OUT" "$CMDLINE" "$COUNTS" "$PER_NS" "$CW_PER_NS" <<'EOF'
import json, os, re, subprocess, sys
raw, out, cmdline, counts, per_ns, cw = sys.argv[1:]
counts = [int(c) for c in counts.split()]
rows = []
for c in counts:
    res = {}
    for r in json.load(open(os.path.join(raw, f"hyperfine-{c}.json")))["results"]:
        res[r["command"]] = r
    timings = [open(os.path.join(raw, f"timing-{c}-{i}.txt")).read() for i in (1, 2, 3)]
    def step(name):
        v = sorted(float(re.search(re.escape(name) + r": ([0-9.]+) ms", t).group(1)) for t in timings)
        return v[1]
    sockets = int(open(os.path.join(raw, f"sockets-{c}")).read())
    fds = int(open(os.path.join(raw, f"fds-{c}")).read())
    rows.append((c, sockets, fds, res, step("all namespaces: dump"),
                 step("all namespaces: attribute (one walk)"), step("all namespaces: enrich")))
med = lambda r: r["median"] * 1000
kernel = os.uname().release
ncpu = os.cpu_count()
lines = [
    "<!-- netns-bench:start -->",
    "## Many network namespaces (`scan --all-netns`)",
    "",
    f"Command: `{cmdline}` (as root, from the repo top), on {ncpu} cores, Linux {kernel}.",
    f"Each namespace holds about {per_ns} loopback sockets of one process (a listener,",
    f"ESTABLISHED pairs, {cw} CLOSE_WAIT with their FIN_WAIT2 peers: bench/nsworkload.py).",
    "The ss loops run `ss -tan` (or `-tanp`) in the host namespace and then",
    "`nsenter --net=/run/netns/NAME ss ...` in every benchmark namespace; `cwdiag` also scans",
    "any other namespace on the host. Medians of one hyperfine run per row, in ms.",
    "",
    "| namespaces | sockets | cwdiag scan --all-netns | ss -tan loop | ss -tanp loop | cwdiag / ss -tan | ss -tanp / cwdiag |",
    "|---|---|---|---|---|---|---|",
]
for c, sockets, fds, res, d, a, e in rows:
    cw_ = med(res["cwdiag scan --all-netns"])
    ss = med(res["ss -tan in every namespace"])
    ssp = med(res["ss -tanp in every namespace"])
    lines.append(f"| {c} | {sockets} | {cw_:.0f} | {ss:.0f} | {ssp:.0f} | {cw_/ss:.2f}x | {ssp/cw_:.0f}x |")
lines += [
    "",
    "Where cwdiag's time goes (`CWDIAG_TIMING=1`, median of three scans per row, ms): the",
    "namespaces are dumped in parallel, then ONE walk of /proc looks up the owners in every",
    "namespace at once. Its cost follows the fds it must look through (every open fd on the",
    "host, counted after the run), not the number of namespaces: a walk per namespace, as",
    "before, would cost about namespaces x this.",
    "",
    "| namespaces | fds on the host | dumps | attribution walk (one) | walk per 1,000 fds | enrich |",
    "|---|---|---|---|---|---|",
]
for c, sockets, fds, res, d, a, e in rows:
    lines.append(f"| {c} | {fds} | {d:.0f} | {a:.0f} | {1000 * a / fds:.2f} | {e:.0f} |")
lines += [
    "",
    "The machine is shared: other work may run during a row.",
    "<!-- netns-bench:end -->",
]
section = "\n".join(lines) + "\n"
text = open(out).read() if os.path.exists(out) else ""
m = re.search(r"<!-- netns-bench:start -->.*?<!-- netns-bench:end -->\n?", text, re.S)
text = text[:m.start()] + section + text[m.end():] if m else text.rstrip("\n") + "\n\n" + section
open(out, "w").write(text)
print(section)
EOF
