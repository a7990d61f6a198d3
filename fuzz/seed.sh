#!/usr/bin/env bash
# (Re)creates the seed corpora in fuzz/corpus/<target>/ from the repo's
# fixtures and the shared external fixtures. Corpora are not committed
# (/fuzz/corpus is gitignored); run this on a fresh checkout before fuzzing.
#
#   fuzz/seed.sh            # seeds every target, keeps what is already there
#   fuzz/seed.sh --clean    # empties the corpora first
#
# SHARED_FIXTURES overrides the external fixture dir (default: the shared
# dir beside the repo, ../shared/external-fixtures from the repo top).
# A target with no case below simply starts from an empty corpus.
set -euo pipefail
fuzz_dir="$(cd "$(dirname "$0")" && pwd)"
top="$(dirname "$fuzz_dir")"
fixtures="$top/fixtures"
shared="${SHARED_FIXTURES:-$top/../shared/external-fixtures}"
corpus="$fuzz_dir/corpus"

if [ "${1:-}" = "--clean" ]; then
  rm -rf "$corpus"
fi

# Netlink dumps: cwdiag --record, ss -D, iproute2's test dump, and an old
# (RHEL 6, TCPDIAG_GETSOCK) dump kept by gosigar.
dumps=("$fixtures/workload.dump" "$fixtures/workload.ss-dump")
json=("$fixtures/workload.snapshot.json" "$fixtures/workload.dump.cwdiag.json")
if [ -d "$shared" ]; then
  dumps+=("$shared/iproute2_ss1.dump")
  for f in "$shared"/gosigar_inet-dump-*.bin; do
    [ -e "$f" ] && dumps+=("$f")
  done
else
  echo "seed.sh: $shared not found; seeding from fixtures/ only" >&2
fi

copy() { # target files...
  local t="$1"; shift
  mkdir -p "$corpus/$t"
  for f in "$@"; do
    cp "$f" "$corpus/$t/$(basename "$f")"
  done
}

# Little-endian u32/u16 at a byte offset of a file.
u32le() { od -An -tu4 -j "$2" -N4 --endian=little "$1" | tr -d ' '; }
u16le() { od -An -tu2 -j "$2" -N2 --endian=little "$1" | tr -d ' '; }

# inet_msg takes one message's payload (the inet_diag_msg and its
# attributes, without the 16-byte netlink header): cut the first few
# socket messages out of each dump.
inet_payloads() { # dump-file max
  local f="$1" max="$2" size pos=0 n=0 len type
  size=$(stat -c %s "$f")
  mkdir -p "$corpus/inet_msg"
  while [ $((pos + 16)) -le "$size" ] && [ "$n" -lt "$max" ]; do
    len=$(u32le "$f" "$pos")
    type=$(u16le "$f" $((pos + 4)))
    if [ "$len" -lt 16 ] || [ $((pos + len)) -gt "$size" ]; then
      break
    fi
    if [ "$type" = 20 ] || [ "$type" = 18 ]; then
      tail -c +$((pos + 17)) "$f" | head -c $((len - 16)) \
        > "$corpus/inet_msg/$(basename "$f").$pos"
      n=$((n + 1))
    fi
    pos=$((pos + ((len + 3) & ~3)))
  done
}

copy netlink_decode "${dumps[@]}"
for f in "${dumps[@]}"; do inet_payloads "$f" 8; done
copy replay_from_bytes "${dumps[@]}" "${json[@]}"
# replay_stream reads its first byte as the read size: the same files,
# each behind a byte giving reads of 1, 8 and 256 bytes.
mkdir -p "$corpus/replay_stream"
for f in "${dumps[@]}" "${json[@]}"; do
  for n in 000 007 377; do
    { printf "\\$n"; cat "$f"; } > "$corpus/replay_stream/$(basename "$f").$n"
  done
done
# kill_plan: a plan as `cwdiag kill --json` prints it.
mkdir -p "$corpus/kill_plan"
cat > "$corpus/kill_plan/plan.json" <<'PLAN'
{"schema_version":1,"kind":"cwdiag-kill-plan","sockets":[{"cookie":4097,"state":"CLOSE_WAIT","local":"127.0.0.1:8080","peer":"127.0.0.1:50312","pid":4242,"comm":"app"},{"cookie":4098,"state":"CLOSE_WAIT","local":"[::1]:8080","peer":"[::1]:50313"}]}
PLAN
printf '0x1f3a' > "$corpus/kill_plan/cookie"
copy snapshot_json "${json[@]}"
# /proc text: the external samples, and this machine's own files.
proc_tcp=() proc_text=()
if [ -d "$shared" ]; then
  proc_tcp+=("$shared"/*proc_net_tcp*.txt "$shared"/node_exporter_proc_net_tcpstat.txt)
  proc_text+=("$shared"/*sockstat*.txt)
fi
mkdir -p "$corpus/proc_net_tcp" "$corpus/proc_text"
for f in /proc/net/tcp /proc/net/tcp6; do [ -r "$f" ] && head -c 4096 "$f" > "$corpus/proc_net_tcp/live-$(basename "$f")"; done
for f in /proc/net/netstat /proc/net/snmp /proc/net/sockstat /proc/self/cgroup /proc/net/unix /proc/net/netlink /proc/net/udp; do
  [ -r "$f" ] && head -c 4096 "$f" > "$corpus/proc_text/live-$(echo "$f" | tr / _)"
done
[ "${#proc_tcp[@]}" -gt 0 ] && copy proc_net_tcp "${proc_tcp[@]}"
[ "${#proc_text[@]}" -gt 0 ] && copy proc_text "${proc_text[@]}"

# Exporter inputs: web configuration files and request bytes (committed
# seeds), plus one configuration with inline PEM made here.
for t in web_config http_request_bytes; do
  copy "$t" "$fuzz_dir"/seeds/"$t"/*
done
if command -v openssl >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  if openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout "$tmp/k.pem" -out "$tmp/c.pem" -days 1 -subj /CN=localhost 2>/dev/null; then
    { printf 'tls_server_config:\n  cert: |\n'; sed 's/^/    /' "$tmp/c.pem"
      printf '  key: |\n'; sed 's/^/    /' "$tmp/k.pem"; } > "$corpus/web_config/inline-pem.yml"
  fi
  rm -rf "$tmp"
fi

for d in "$corpus"/*/; do
  printf '%-20s %3d files\n' "$(basename "$d")" "$(find "$d" -type f | wc -l)"
done
