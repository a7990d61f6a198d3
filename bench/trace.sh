#!/usr/bin/env bash
# Benchmark of `cwdiag trace`: can the event stream keep up with a real connection churn?
# nginx (return 204, one worker) and ab (HTTP/1.0: a new connection per request) in a private
# network namespace; `cwdiag trace --json` runs for the whole ab run, writing to /dev/null.
# Reported per ab concurrency: connections/s, events read, events lost (the kernel's
# overrun + dropped counts), and cwdiag's CPU time (user+sys) per second of tracing.
#
# Run as root from the repo top (needs nginx and ab, apache2-utils):
#     bench/trace.sh                      # REQUESTS=100000 CONCURRENCY="4 16" PARALLEL=2
# PARALLEL ab processes run at once (each REQUESTS requests, concurrency C), against
# PARALLEL nginx workers.
# The results go into the "Event stream" section of BENCHMARKS.md (between its markers).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REQUESTS=${REQUESTS:-100000}
CONCURRENCY=${CONCURRENCY:-"4 16"}
PARALLEL=${PARALLEL:-2}
OUT=${OUT:-BENCHMARKS.md}
NS=trace-bench-$$
TMP=$(mktemp -d)
BIN=target/release/cwdiag
cleanup() {
    [ -f "$TMP/nginx.pid" ] && kill "$(cat "$TMP/nginx.pid")" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
cargo build --release --quiet
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
ip netns exec "$NS" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="10000 65000"
cat > "$TMP/nginx.conf" <<CONF
worker_processes $PARALLEL;
pid $TMP/nginx.pid;
error_log $TMP/error.log;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:8099; location / { return 204; } } }
CONF
ip netns exec "$NS" nginx -c "$TMP/nginx.conf"
sleep 0.5
rows=""
for c in $CONCURRENCY; do
    "$BIN" trace --json --netns "$NS" > /dev/null 2> "$TMP/err" &
    T=$!
    until grep -q tracing "$TMP/err"; do sleep 0.05; done
    t0=$(awk '{print $14+$15}' /proc/$T/stat)
    s0=$(date +%s.%N)
    abs=()
    for i in $(seq "$PARALLEL"); do
        ip netns exec "$NS" ab -q -n "$REQUESTS" -c "$c" http://127.0.0.1:8099/ > "$TMP/ab.$i" 2>&1 &
        abs+=($!)
    done
    wait "${abs[@]}"
    sleep 0.3
    t1=$(awk '{print $14+$15}' /proc/$T/stat)
    s1=$(date +%s.%N)
    kill -TERM $T; wait $T
    # Connections per second over the run: all requests over the wall time.
    rate=$(awk -v n="$((REQUESTS * PARALLEL))" -v s0="$s0" -v s1="$s1" 'BEGIN {printf "%.0f", n/(s1-s0)}')
    summary=$(tail -1 "$TMP/err")
    read_n=$(sed -E 's/.* ([0-9]+) events read.*/\1/' <<<"$summary")
    lost=$(sed -E 's/.* ([0-9]+) lost.*/\1/' <<<"$summary")
    tck=$(getconf CLK_TCK)
    cpu=$(awk -v a="$t0" -v b="$t1" -v s0="$s0" -v s1="$s1" -v k="$tck" 'BEGIN {printf "%.1f", 100*(b-a)/k/(s1-s0)}')
    per_cpu_s=$(awk -v a="$t0" -v b="$t1" -v k="$tck" -v n="$read_n" 'BEGIN {printf "%.0f", (b > a) ? n/((b-a)/k) : 0}')
    rows+="| $c | $rate | $read_n | $lost | $cpu % | $per_cpu_s |"$'\n'
    echo "concurrency $c: $rate conn/s, $read_n events, $lost lost, cpu $cpu %, $per_cpu_s events per cpu-second" >&2
done
section="<!-- trace-bench:start -->
## Event stream (\`cwdiag trace\`)

Command: \`bench/trace.sh\` (REQUESTS=$REQUESTS PARALLEL=$PARALLEL, as root, from the repo top), on
$(nproc) cores, Linux $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC'). nginx ($PARALLEL workers,
\`return 204\`) and $PARALLEL \`ab -n $REQUESTS -c C\` at once (HTTP/1.0: one new connection per
request) in a private namespace; connections/s = all requests over the wall time (0.3 s of
settling included);
\`cwdiag trace --json --netns NS > /dev/null\` for the whole run. CPU is cwdiag's user+sys
time over the run's wall time (100 % = one core). About 12 events per connection (state
changes of both ends and two destroys). The load generator, not cwdiag, limits the rate here:
the last column is what one core of cwdiag absorbs (divide by 12 for connections/s). The
machine is shared: other work may run meanwhile.

| ab concurrency | connections/s | events read | events lost | cwdiag CPU | events per cwdiag CPU-second |
|---|---|---|---|---|---|
${rows}<!-- trace-bench:end -->"
python3 - "$OUT" "$section" <<'PY'
import re, sys
out, section = sys.argv[1], sys.argv[2] + "\n"
text = open(out).read()
m = re.search(r"<!-- trace-bench:start -->.*?<!-- trace-bench:end -->\n?", text, re.S)
text = text[:m.start()] + section + text[m.end():] if m else text.rstrip("\n") + "\n\n" + section
open(out, "w").write(text)
PY
echo "$section"
