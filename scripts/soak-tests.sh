#!/usr/bin/env bash
# Runs the whole `cargo test` N times (default 30) and reports every failed
# run with the failing tests' names. Exit 1 if any run failed.
#   scripts/soak-tests.sh 30
#   SOAK_ARGS="--lib" scripts/soak-tests.sh 20     # only the unit tests
set -uo pipefail
cd "$(dirname "$0")/.."
n="${1:-30}"
log_dir="$(mktemp -d "${TMPDIR:-/tmp}/cwdiag-soak.XXXXXX")"
# shellcheck disable=SC2086
cargo test --no-run ${SOAK_ARGS:-} >/dev/null 2>&1 || { echo "build failed"; exit 2; }
failed=0
for i in $(seq 1 "$n"); do
  log="$log_dir/run-$i.log"
  start=$(date +%s%N)
  # shellcheck disable=SC2086
  if cargo test ${SOAK_ARGS:-} >"$log" 2>&1; then
    printf 'run %3d/%d: ok   (%d ms)\n' "$i" "$n" "$((($(date +%s%N) - start) / 1000000))"
  else
    failed=$((failed + 1))
    printf 'run %3d/%d: FAIL (log: %s)\n' "$i" "$n" "$log"
    grep -E '^(---- .* stdout ----|test .* FAILED$)' "$log" | sed 's/^/    /' | sort -u
  fi
done
echo "$((n - failed)) passed, $failed failed (runs of cargo test ${SOAK_ARGS:-}; logs in $log_dir)"
[ "$failed" -eq 0 ]
