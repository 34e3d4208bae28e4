#!/usr/bin/env bash
# The main job: installs what is needed, then runs the roaming demo in the
# network-namespace lab (the mobile node moves home -> int-a -> int-b (through a
# foreign agent) -> a NATed network -> home while TCP transfers and a ping series run
# to a correspondent node). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release -q -p mipsec -p lab
exec ./target/release/mipsec-lab demo "$@"
