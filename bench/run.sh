#!/usr/bin/env bash
# Benchmark of issue #5: cwdiag against ss and netstat on a real loopback workload.
#
# Run as root from the repo top:
#     bench/run.sh                                  # SIZES="20000 100000 200000"
#     SIZES="20000 200000 400000" bench/run.sh
#
# For each size N it makes a fresh network namespace cwbench-N, fills it with about N real
# TCP sockets (bench/workload.py: 10 % CLOSE_WAIT held by a few processes, their orphaned
# FIN_WAIT2 peers, 15 % TIME_WAIT kept steady by churn, the rest ESTABLISHED pairs), checks
# the counts with ss, times every command with hyperfine inside the namespace, records the
# peak RSS of cwdiag with /usr/bin/time -v, and at PERF_AT sockets takes a perf profile of
# `cwdiag scan`. bench/report.py then (re)writes BENCHMARKS.md from the results.
#
# Environment (defaults in brackets):
#   SIZES [20000 100000 200000]  socket counts to run, ascending is best
#   RUNS [10] WARMUP [2]         hyperfine runs for the fast commands
#   SLOW_RUNS [3] SLOW_WARMUP [1]  for ss -tanp and netstat -tanp (seconds each at 200k+)
#   BIG [300000] SLOW_RUNS_BIG [1] SLOW_WARMUP_BIG [0]  used instead at N >= BIG
#                                (ss -tanp and netstat -tanp take over a minute each at 400k)
#   NICE [-15]                   niceness of every timed command (the machine may be shared)
#   QUIET_MAX [120]              wait up to this many seconds before each size for the host
#                                to be quiet: CPUs under QUIET_PCT [25] % busy and at most
#                                OTHER_FDS_MAX [3000] fds held outside the workload
#   CW_FRAC [0.10] TW_FRAC [0.15]  workload mix
#   CW_MIX [1]                   1: the CLOSE_WAIT holders also hold ESTABLISHED pairs
#   CW_PROCS [2]                 at least this many CLOSE_WAIT holder processes
#   TW_WARM [62]                 seconds of TIME_WAIT churn before timing (it lives 60 s)
#   PERF_AT [200000]             size at which to record a perf profile ("" = none)
#   OUT [BENCHMARKS.md]          report to write
#   KEEP [0]                     1 = keep the raw results directory
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)

SIZES=${SIZES:-"20000 100000 200000"}
RUNS=${RUNS:-10}
WARMUP=${WARMUP:-2}
SLOW_RUNS=${SLOW_RUNS:-3}
SLOW_WARMUP=${SLOW_WARMUP:-1}
BIG=${BIG:-300000}
SLOW_RUNS_BIG=${SLOW_RUNS_BIG:-1}
SLOW_WARMUP_BIG=${SLOW_WARMUP_BIG:-0}
CW_FRAC=${CW_FRAC:-0.10}
TW_FRAC=${TW_FRAC:-0.15}
CW_MIX=${CW_MIX:-1}
CW_PROCS=${CW_PROCS:-2}
TW_WARM=${TW_WARM:-62}
PERF_AT=${PERF_AT-200000}
NICE=${NICE:--15}
QUIET_MAX=${QUIET_MAX:-120}
OTHER_FDS_MAX=${OTHER_FDS_MAX:-3000}
QUIET_PCT=${QUIET_PCT:-25}
OUT=${OUT:-BENCHMARKS.md}
KEEP=${KEEP:-0}

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (network namespaces, sysctls)"

# The command line to print in the report: the env that differs from the defaults.
CMDLINE="bench/run.sh"
for v in SIZES RUNS WARMUP SLOW_RUNS SLOW_WARMUP BIG SLOW_RUNS_BIG SLOW_WARMUP_BIG CW_FRAC TW_FRAC CW_MIX CW_PROCS TW_WARM NICE QUIET_MAX QUIET_PCT OTHER_FDS_MAX PERF_AT; do
    if [ -n "${!v+x}" ] && printenv "$v" >/dev/null; then
        CMDLINE="$v=\"${!v}\" $CMDLINE"
    fi
done

# --- tools -------------------------------------------------------------------------------
need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v netstat >/dev/null || need+=(net-tools)
{ command -v ip && command -v ss; } >/dev/null || need+=(iproute2)
[ -x /usr/bin/time ] || need+=(time)
command -v python3 >/dev/null || need+=(python3)
if [ -n "$PERF_AT" ] && ! command -v perf >/dev/null; then need+=(linux-perf); fi
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || die "cargo not found"

WORK=$(mktemp -d /tmp/cwbench.XXXXXX)
# Time a private copy: others may rebuild target/release/cwdiag while this runs.
BIN=$WORK/cwdiag
NS=""
WPID=""
cleanup() {
    local rc=$?
    if [ -n "$WPID" ] && kill -0 "$WPID" 2>/dev/null; then
        kill "$WPID" 2>/dev/null || true
        wait "$WPID" 2>/dev/null || true
    fi
    if [ -n "$NS" ] && ip netns list | grep -qw "^$NS"; then
        ip netns del "$NS" || true
    fi
    if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then
        log "raw results kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "cargo build --release"
if cargo build --release --quiet; then
    BUILT_FROM="the working tree"
    cp target/release/cwdiag "$BIN"
else
    # Someone is mid-edit: benchmark the last commit instead, built in a scratch clone.
    log "the working tree does not build; building HEAD in a scratch clone instead"
    git clone -q "$REPO" "$WORK/src"
    (cd "$WORK/src" && CARGO_TARGET_DIR="$REPO/target/bench-head" cargo build --release --quiet)
    cp "$REPO/target/bench-head/release/cwdiag" "$BIN"
    BUILT_FROM="HEAD (the working tree did not build)"
fi

# --- machine -----------------------------------------------------------------------------
python3 - "$WORK/machine.json" <<EOF
import json, subprocess, sys
def sh(c):
    return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
json.dump({
    "nproc": sh("nproc"),
    "kernel": sh("uname -r"),
    "cpu": sh("lscpu | sed -n 's/^Model name: *//p' | head -1"),
    "mem": sh("free -g | awk '/^Mem:/{print \$2\" GiB\"}'"),
    "date": sh("date -u '+%Y-%m-%d %H:%M UTC'"),
    "hyperfine": sh("hyperfine --version"),
    "ss": sh("ss -V"),
    "netstat": sh("netstat --version 2>&1 | head -1"),
    "cwdiag": sh("'$BIN' --version"),
    "commit": sh("git -C '$REPO' rev-parse --short HEAD"),
    "dirty": sh("git -C '$REPO' status --porcelain -- src Cargo.toml Cargo.lock | wc -l")
             if "$BUILT_FROM" == "the working tree" else "0",
    "built_from": "$BUILT_FROM",
    "sha256": sh("sha256sum '$BIN' | cut -c1-16"),
    "cmdline": '''$CMDLINE''',
    "runs": "$RUNS", "warmup": "$WARMUP", "slow_runs": "$SLOW_RUNS",
    "slow_warmup": "$SLOW_WARMUP", "big": "$BIG", "slow_runs_big": "$SLOW_RUNS_BIG",
    "slow_warmup_big": "$SLOW_WARMUP_BIG", "nice": "$NICE",
    "quiet_max": "$QUIET_MAX", "quiet_pct": "$QUIET_PCT", "other_fds_max": "$OTHER_FDS_MAX",
    "cw_frac": "$CW_FRAC", "tw_frac": "$TW_FRAC", "cw_mix": "$CW_MIX", "cw_procs": "$CW_PROCS", "perf_at": "$PERF_AT",
}, open(sys.argv[1], "w"), indent=1)
EOF

# state counts from `ss -tan` (header skipped), one "STATE COUNT" a line, then "total N"
ss_counts() {
    ip netns exec "$NS" ss -tan | awk 'NR>1 {c[$1]++; t++} END {for (s in c) print s, c[s]; print "total", t+0}' | sort
}

# Wait (up to QUIET_MAX s) until the host is quiet: CPUs mostly idle and no big fd holders
# besides the workload (cwdiag, ss -p and netstat -p walk every fd on the host, and every
# sock_diag dump walks every namespace's sockets). Prints bench/hostcheck.py's last JSON.
wait_quiet() {
    local d=$1 waited=0 out
    while :; do
        out=$(NS="$NS" python3 bench/hostcheck.py "$d/ready.json" "$WPID")
        if python3 -c 'import json, sys
h = json.loads(sys.argv[1])
sys.exit(0 if h["busy_pct"] <= int(sys.argv[2]) and h["other_fds"] <= int(sys.argv[3]) else 1)' \
            "$out" "$QUIET_PCT" "$OTHER_FDS_MAX"; then
            break
        fi
        [ $waited -lt "$QUIET_MAX" ] || { log "host still not quiet; timing anyway: $out"; break; }
        [ $waited -gt 0 ] || log "host not quiet ($out); waiting up to ${QUIET_MAX}s"
        sleep 9
        waited=$((waited + 10))
    done
    echo "$out"
}

# --- one size ----------------------------------------------------------------------------
run_size() {
    local n=$1 d=$WORK/$n
    mkdir -p "$d"
    NS=cwbench-$n
    if ip netns list | grep -qw "^$NS"; then ip netns del "$NS"; fi
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    ip netns exec "$NS" sysctl -qw \
        net.ipv4.ip_local_port_range="10000 65535" \
        net.ipv4.tcp_fin_timeout=600 \
        net.ipv4.tcp_tw_reuse=0 \
        net.ipv4.tcp_max_tw_buckets=1000000

    log "[$n] building the workload in $NS (ready after ~62 s: TIME_WAIT must reach steady state)"
    ip netns exec "$NS" python3 bench/workload.py --total "$n" \
        --cw-frac "$CW_FRAC" --tw-frac "$TW_FRAC" --cw-mix "$CW_MIX" --cw-procs "$CW_PROCS" --tw-warm "$TW_WARM" --ready-file "$d/ready.json" \
        >"$d/workload.log" 2>&1 &
    WPID=$!
    local waited=0
    while [ ! -f "$d/ready.json" ]; do
        if ! kill -0 "$WPID" 2>/dev/null; then
            cat "$d/workload.log" >&2
            die "[$n] workload exited before it was ready"
        fi
        sleep 1
        waited=$((waited + 1))
        [ $waited -lt 400 ] || die "[$n] workload not ready after 400 s"
    done
    sed 's/^/    /' "$d/workload.log" >&2

    # Counts, and cwdiag's view of the same table between two ss snapshots.
    ss_counts >"$d/counts_before.txt"
    ip netns exec "$NS" "$BIN" scan --json --top 0 >"$d/scan.json"
    ss_counts >"$d/counts_between.txt"
    log "[$n] ss -tan state counts:"
    sed 's/^/    /' "$d/counts_before.txt" >&2
    log "[$n] cwdiag scan --json .states: $(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["states"]; print(" ".join(f"{k}={v}" for k,v in s.items() if v))' "$d/scan.json")"
    cat /proc/loadavg >"$d/loadavg_before.txt"
    wait_quiet "$d" >"$d/host_before.json"

    local sr=$SLOW_RUNS sw=$SLOW_WARMUP
    if [ "$n" -ge "$BIG" ]; then sr=$SLOW_RUNS_BIG; sw=$SLOW_WARMUP_BIG; fi
    local hf=(nice -n "$NICE" ip netns exec "$NS" hyperfine --style basic --time-unit millisecond)

    log "[$n] host before timing: $(cat "$d/host_before.json")"
    log "[$n] hyperfine: fast commands (--warmup $WARMUP --runs $RUNS)"
    "${hf[@]}" -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$d/fast.json" \
        -n "cwdiag scan" "$BIN scan" \
        -n "cwdiag scan --json" "$BIN scan --json" \
        -n "cwdiag assert --max-close-wait 1000000000" "$BIN assert --max-close-wait 1000000000" \
        -n "ss -tan" "ss -tan" \
        -n "ss -tan state close-wait" "ss -tan state close-wait" \
        -n "raw dump (ss -D)" "ss -tan -D /dev/null" \
        -n "raw dump, CLOSE_WAIT only (ss -D)" "ss -tan state close-wait -D /dev/null" >"$d/fast.txt"
    # A pipeline needs a shell; hyperfine subtracts the shell's own start-up time.
    "${hf[@]}" --warmup "$WARMUP" --runs "$RUNS" --export-json "$d/pipe.json" \
        -n "ss -tan state close-wait | wc -l" "ss -tan state close-wait | wc -l" >"$d/pipe.txt"
    log "[$n] hyperfine: ss -tanp, netstat -tanp (--warmup $sw --runs $sr)"
    "${hf[@]}" -N --warmup "$sw" --runs "$sr" --export-json "$d/slow.json" \
        -n "ss -tanp" "ss -tanp" \
        -n "netstat -tanp" "netstat -tanp" >"$d/slow.txt"
    grep -hE '^(Benchmark|  Time)' "$d/fast.txt" "$d/pipe.txt" "$d/slow.txt" | paste - - |
        sed -E 's/Benchmark [0-9]+: //; s/ +Time \(mean ± σ\): +/ : /' | sed 's/^/    /' >&2 || true

    log "[$n] peak RSS (/usr/bin/time -v, 3 runs each)"
    local mode i
    for mode in scan json; do
        for i in 1 2 3; do
            if [ $mode = scan ]; then
                nice -n "$NICE" ip netns exec "$NS" /usr/bin/time -v "$BIN" scan >/dev/null 2>>"$d/time_$mode.txt"
            else
                nice -n "$NICE" ip netns exec "$NS" /usr/bin/time -v "$BIN" scan --json >/dev/null 2>>"$d/time_$mode.txt"
            fi
        done
        grep 'Maximum resident' "$d/time_$mode.txt" | awk '{print $NF}' | sort -n | tail -1 >"$d/rss_$mode.txt"
        log "    cwdiag $mode: $(cat "$d/rss_$mode.txt") KiB"
    done

    if [ -n "$PERF_AT" ] && [ "$n" = "$PERF_AT" ]; then
        log "[$n] perf record -g on 5 runs of cwdiag scan"
        ip netns exec "$NS" perf record -q -g -F 1999 -o "$d/perf.data" -- \
            sh -c "for i in 1 2 3 4 5; do '$BIN' scan >/dev/null; done" 2>"$d/perf_record.txt" || true
        perf report -i "$d/perf.data" --stdio --no-children -g none -F overhead,dso,sym \
            --comm cwdiag --percent-limit 0 2>/dev/null | grep -v '^#' | sed '/^$/d' >"$WORK/perf_all.txt" || true
        perf report -i "$d/perf.data" --stdio --children -g none --sort sym --comm cwdiag \
            --percent-limit 0 2>/dev/null | grep -E '\[k\] __x64_sys_' >"$WORK/perf_syscalls.txt" || true
        perf report -i "$d/perf.data" --stdio 2>/dev/null | head -40 >"$WORK/perf_head.txt" || true
        echo "$n" >"$WORK/perf_size.txt"
        head -15 "$WORK/perf_all.txt" >&2
    fi

    ss_counts >"$d/counts_after.txt"
    cat /proc/loadavg >"$d/loadavg_after.txt"
    NS="$NS" python3 bench/hostcheck.py "$d/ready.json" "$WPID" >"$d/host_after.json"
    log "[$n] tearing down"
    kill "$WPID"
    wait "$WPID" 2>/dev/null || true
    WPID=""
    ip netns del "$NS"
    NS=""
    sleep 3  # let the kernel free the namespace's sockets before the next size
}

for n in $SIZES; do
    run_size "$n"
done

python3 bench/report.py "$WORK" "$OUT"
log "wrote $OUT"
