#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a budget, then prints
# libFuzzer's closing figures per target. Exits 1 if any target crashed.
#
#   fuzz/run-all.sh runs 10000000          # -runs=N per target
#   fuzz/run-all.sh time 60                # -max_total_time=S per target
#   fuzz/run-all.sh time 60 inet_msg       # only the named targets
#   fuzz/run-all.sh regressions            # replay fuzz/regressions/*.bin
#
# JOBS=2 runs two targets at a time (default 1). FUZZ_ARGS adds libFuzzer
# flags (e.g. FUZZ_ARGS=-max_total_time=2400 as a cap beside `runs`).
# fuzz/dicts/TARGET.dict, when present, is passed as -dict.
# TOOLCHAIN=+nightly is the cargo toolchain argument (cargo-fuzz needs
# nightly). Targets come from
# `cargo fuzz list`, so a new [[bin]] in Cargo.toml is picked up here.
# Logs: fuzz/artifacts/logs/TARGET.log; crashes: fuzz/artifacts/TARGET/.
set -euo pipefail
fuzz_dir="$(cd "$(dirname "$0")" && pwd)"
top="$(dirname "$fuzz_dir")"
cd "$top"
toolchain="${TOOLCHAIN:-+nightly}"
jobs="${JOBS:-1}"

usage() { sed -n '2,17p' "$0" >&2; exit 2; }
mode="${1:-}"
case "$mode" in
  runs) [ $# -ge 2 ] || usage; flag="-runs=$2"; shift 2 ;;
  time) [ $# -ge 2 ] || usage; flag="-max_total_time=$2"; shift 2 ;;
  regressions) shift ;;
  *) usage ;;
esac

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo "$toolchain" fuzz list)
fi
logs="$fuzz_dir/artifacts/logs"
mkdir -p "$logs"

# Build once up front, so parallel runs do not race on the build.
cargo "$toolchain" fuzz build

if [ "$mode" = regressions ]; then
  # Each reproducer is run on its own (libFuzzer stops at the first crash
  # of a list), so every one that still fails is named.
  status=0
  shopt -s nullglob
  for t in "${targets[@]}"; do
    for f in "$fuzz_dir/regressions/$t"-*.bin; do
      log="$logs/$(basename "$f").log"
      if cargo "$toolchain" fuzz run "$t" "$f" >"$log" 2>&1; then
        echo "ok      $t  $(basename "$f")"
      else
        echo "FAILED  $t  $(basename "$f"): $(grep -m1 -A1 'panicked at' "$log" | tr '\n' ' ')"
        status=1
      fi
    done
  done
  exit $status
fi

[ -d "$fuzz_dir/corpus" ] || "$fuzz_dir/seed.sh"

run_one() {
  local t="$1" log="$logs/$1.log" start end line extra=()
  [ -e "$fuzz_dir/dicts/$t.dict" ] && extra+=("-dict=$fuzz_dir/dicts/$t.dict")
  start=$(date +%s)
  if cargo "$toolchain" fuzz run "$t" -- "$flag" -print_final_stats=1 "${extra[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1; then
    end=$(date +%s)
    line="ok      $t  $((end - start)) s  $(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)"
  else
    end=$(date +%s)
    line="CRASH   $t  $((end - start)) s  see $log and fuzz/artifacts/$t/"
  fi
  echo "$line"
  echo "$line" >"$logs/$t.result"
}

for t in "${targets[@]}"; do
  rm -f "$logs/$t.result"
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  run_one "$t" &
done
wait
status=0
for t in "${targets[@]}"; do
  grep -q '^ok ' "$logs/$t.result" 2>/dev/null || status=1
done
exit $status
