#!/usr/bin/env bash
# The main job: installs what is needed, then runs the roaming demo through the
# enterprise lab of RFC 5265 Figure 1 (unmodified strongSwan gateway, x-HA, firewall):
# the mobile node moves home -> int-a (c) -> int-b (f) -> ext-a (cvc) -> ext-b (fvc)
# -> ext-nat (cvc behind a NAT) -> ext-a -> int-a -> home while TCP runs both ways and
# 5 ms probes go to a correspondent node. `--mode mc` uses MOBIKE instead of the
# x-HA; `--pcap DIR` writes one capture per segment. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release -q -p mipsec -p lab
exec ./target/release/mipsec-lab demo --enterprise "$@"
