#!/usr/bin/env bash
# Generates the man pages and shell completions that `cargo deb` packages
# (see [package.metadata.deb] in Cargo.toml). Run from the repo top:
#   packaging/gen-assets.sh && cargo deb
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
bin=${CARGO_TARGET_DIR:-target}/release/cwdiag
out=target/assets
mkdir -p "$out"
"$bin" man > "$out/cwdiag.1"
# Every subcommand but clap's `help` gets its own page (Cargo.toml lists them).
subs=$("$bin" --help | sed -n '/^Commands:/,/^$/p' | awk 'NR > 1 && $1 != "help" && NF { print $1 }')
for sub in $subs; do
  "$bin" man "$sub" > "$out/cwdiag-$sub.1"
done
"$bin" completions bash > "$out/cwdiag.bash"
"$bin" completions zsh > "$out/_cwdiag"
"$bin" completions fish > "$out/cwdiag.fish"
echo "assets written to $out"
