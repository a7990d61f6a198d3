#!/usr/bin/env bash
# Side-by-side run: this build's `cwdiag scan`, a previous build's, `ss -tan` and the raw
# dump floor (`ss -ntaD /dev/null`, the kernel's work plus writing the replies), timed by
# one hyperfine call per size in the same namespace, quiet and with other processes
# holding many non-socket fds. Writes its section of BENCHMARKS.md (bench/side_report.py).
#
# Run as root from the repo top:
#     PREV=/tmp/prevmain/target/release/cwdiag bench/side.sh
#
# Environment (defaults in brackets):
#   PREV [required]              the previous build's binary
#   PREV_NAME [previous main]    what to call it in the table
#   SIZES [20000 100000 200000 400000]
#   HOG_SIZES [20000 100000]     sizes also run with FD_HOG fds held outside the namespace
#   FD_HOG [38000]               non-socket fds held by two other processes (half each)
#   RUNS [10] WARMUP [2] NICE [-15] TW_WARM [62] (seconds of TIME_WAIT churn before timing)
#   OUT [BENCHMARKS.md]  KEEP [0]  NS_PREFIX [cwside] (namespaces are PREFIX-N)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
: "${PREV:?set PREV to the cwdiag binary of the previous build}"
PREV_NAME=${PREV_NAME:-previous main}
SIZES=${SIZES:-"20000 100000 200000 400000"}
HOG_SIZES=${HOG_SIZES-"20000 100000"}
FD_HOG=${FD_HOG:-38000}
RUNS=${RUNS:-10}
WARMUP=${WARMUP:-2}
NICE=${NICE:--15}
TW_WARM=${TW_WARM:-62}
OUT=${OUT:-BENCHMARKS.md}
KEEP=${KEEP:-0}
log() { printf '[side %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
[ "$(id -u)" -eq 0 ] || { log "run as root"; exit 1; }
command -v hyperfine >/dev/null || { log "hyperfine missing (apt-get install hyperfine)"; exit 1; }

CMDLINE="bench/side.sh"
for v in PREV SIZES HOG_SIZES FD_HOG RUNS WARMUP NICE TW_WARM; do
    if printenv "$v" >/dev/null; then CMDLINE="$v=\"${!v}\" $CMDLINE"; fi
done

WORK=$(mktemp -d /tmp/cwside.XXXXXX)
NS="" WPID="" HOGS=()
cleanup() {
    local rc=$?
    [ -z "$WPID" ] || { kill "$WPID" 2>/dev/null || true; wait "$WPID" 2>/dev/null || true; }
    for h in "${HOGS[@]}"; do kill "$h" 2>/dev/null || true; wait "$h" 2>/dev/null || true; done
    if [ -n "$NS" ] && ip netns list | grep -qw "^$NS"; then ip netns del "$NS" || true; fi
    if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then log "raw results kept in $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "cargo build --release"
cargo build --release --quiet
BIN=$WORK/cwdiag
PBIN=$WORK/cwdiag-prev
cp target/release/cwdiag "$BIN"
cp "$PREV" "$PBIN"
python3 - "$WORK/machine.json" "$CMDLINE" "$PREV_NAME" "$BIN" "$PBIN" <<'PY'
import json, subprocess, sys
out, cmdline, prev_name, bin_, pbin = sys.argv[1:]
sh = lambda c: subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
json.dump({
    "cmdline": cmdline, "prev_name": prev_name,
    "date": sh("date -u '+%Y-%m-%d %H:%M UTC'"), "nproc": sh("nproc"), "kernel": sh("uname -r"),
    "cwdiag": sh(f"'{bin_}' --version"), "commit": sh("git rev-parse --short HEAD"),
    "dirty": sh("git status --porcelain -- src Cargo.toml Cargo.lock | wc -l"),
    "prev": sh(f"'{pbin}' --version"), "hyperfine": sh("hyperfine --version"), "ss": sh("ss -V"),
}, open(out, "w"), indent=1)
PY

busy_pct() {  # per cent of all CPU time busy over one second
    python3 - <<'PY'
import time
def s():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)
b1, t1 = s(); time.sleep(1); b2, t2 = s()
print(round(100 * (b2 - b1) / max(1, t2 - t1)))
PY
}

one_case() {  # size, case name (quiet | hog); the namespace and workload are up
    local n=$1 case=$2 d=$WORK/$1-$2
    mkdir -p "$d"
    ip netns exec "$NS" ss -tan | awk 'NR>1 {c[$1]++; t++} END {for (s in c) print s, c[s]; print "total", t+0}' | sort >"$d/counts.txt"
    { cat /proc/loadavg; echo "busy_pct $(busy_pct)"; } >"$d/host_before.txt"
    log "[$n $case] $(tr '\n' ' ' <"$d/host_before.txt")"
    nice -n "$NICE" ip netns exec "$NS" hyperfine -N --style basic --time-unit millisecond \
        --warmup "$WARMUP" --runs "$RUNS" --export-json "$d/times.json" \
        -n "cwdiag scan" "$BIN scan" \
        -n "$PREV_NAME scan" "$PBIN scan" \
        -n "ss -tan" "ss -tan" \
        -n "raw dump (ss -ntaD /dev/null)" "ss -ntaD /dev/null" >"$d/hyperfine.txt"
    { cat /proc/loadavg; echo "busy_pct $(busy_pct)"; } >"$d/host_after.txt"
    for b in new prev; do
        local x=$BIN; [ $b = new ] || x=$PBIN
        for _ in 1 2 3; do
            ip netns exec "$NS" /usr/bin/time -v "$x" scan 2>&1 >/dev/null | awk '/Maximum resident/ {print $NF}'
        done | sort -n | tail -1 >"$d/rss_$b.txt"
    done
    # Steps of the new build: the median run of five.
    for i in 1 2 3 4 5; do
        nice -n "$NICE" ip netns exec "$NS" env CWDIAG_TIMING=1 "$BIN" scan 2>"$d/timing_$i.txt" >/dev/null
    done
    grep -h '^  *Time' "$d/hyperfine.txt" | sed 's/^/    /' >&2 || true
}

for n in $SIZES; do
    NS=${NS_PREFIX:-cwside}-$n
    if ip netns list | grep -qw "^$NS"; then ip netns del "$NS"; fi
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    ip netns exec "$NS" sysctl -qw net.ipv4.ip_local_port_range="10000 65535" \
        net.ipv4.tcp_fin_timeout=600 net.ipv4.tcp_tw_reuse=0 net.ipv4.tcp_max_tw_buckets=1000000
    log "[$n] workload (ready after ${TW_WARM} s of TIME_WAIT churn)"
    rm -f "$WORK/ready-$n.json"
    ip netns exec "$NS" python3 bench/workload.py --total "$n" --tw-warm "$TW_WARM" \
        --ready-file "$WORK/ready-$n.json" >"$WORK/workload-$n.log" 2>&1 &
    WPID=$!
    while [ ! -f "$WORK/ready-$n.json" ]; do
        kill -0 "$WPID" 2>/dev/null || { cat "$WORK/workload-$n.log" >&2; exit 1; }
        sleep 1
    done
    one_case "$n" quiet
    if [[ " $HOG_SIZES " == *" $n "* ]]; then
        for i in 1 2; do
            rm -f "$WORK/hog$i.ready"
            python3 bench/fdhog.py $((FD_HOG / 2)) "$WORK/hog$i.ready" &
            HOGS+=($!)
        done
        while [ ! -f "$WORK/hog1.ready" ] || [ ! -f "$WORK/hog2.ready" ]; do sleep 0.5; done
        cat "$WORK"/hog?.ready | paste -sd+ | bc >"$WORK/$n-hog.fds"
        one_case "$n" hog
        mv "$WORK/$n-hog.fds" "$WORK/$n-hog/fds.txt"
        for h in "${HOGS[@]}"; do kill "$h"; wait "$h" 2>/dev/null || true; done
        HOGS=()
    fi
    kill "$WPID"; wait "$WPID" 2>/dev/null || true; WPID=""
    ip netns del "$NS"; NS=""
    sleep 3
done
python3 bench/side_report.py "$WORK" "$OUT"
log "wrote the side-by-side section of $OUT"
