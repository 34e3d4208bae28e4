#!/usr/bin/env bash
# The whole mipsec test suite, exactly as CI runs it (.ci/run calls this script).
# Installs its prerequisites, then: formatting, lints, the sans-IO dependency rule,
# unit + simulation + interop/lab tests (lab tests need root: they build network
# namespaces), and a bounded run of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-15}"
step() { printf '\n==== %s ====\n' "$*"; }

step "prerequisites"
./scripts/install-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --release -q -- -D warnings

step "sans-IO crates depend on no I/O runtime"
for crate in cachehint wire mip4 esp ikev2 mobility; do
  if cargo tree -p "$crate" -e normal --prefix none | grep -E '^(tokio|mio|socket2|nix|rtnetlink|netlink-sys) ' ; then
    echo "FAIL: $crate must stay sans-IO but depends on the crates above" >&2
    exit 1
  fi
done
echo "ok: cachehint, wire, mip4, esp, ikev2, mobility have no I/O dependencies"

step "fuzz targets (${FUZZ_SECONDS}s each)"
if cargo +nightly --version >/dev/null 2>&1; then FUZZ=(cargo +nightly fuzz); else
  export RUSTC_BOOTSTRAP=1; FUZZ=(cargo fuzz); fi
for dir in crates/*/fuzz; do
  [ -f "$dir/Cargo.toml" ] || continue
  crate_dir=$(dirname "$dir")
  for target in $(cd "$crate_dir" && "${FUZZ[@]}" list); do
    echo "-- fuzz $crate_dir $target"
    (cd "$crate_dir" && "${FUZZ[@]}" run -s none "$target" -- -max_total_time="$FUZZ_SECONDS" -print_final_stats=0 2>&1 | tail -n 2)
  done
done

step "cargo test (unit, simulation, interop and lab tests)"
if [ "$(id -u)" -ne 0 ]; then
  echo "FAIL: the lab tests build network namespaces and need root; run this as root" >&2
  exit 1
fi
mkdir -p target
cargo test --workspace --release 2>&1 | tee target/test-output.log
