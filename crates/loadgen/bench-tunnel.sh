#!/usr/bin/env bash
# Measures what `mipsec ha` delivers of RFC 3519 Tunnel Data from many nodes behind
# NATs (the reverse tunnel), with mipsec-loadgen's `tunnel` mode, in a network
# namespace of its own (root). The inner packets go to a blackhole route, so the
# figure is the home agent's: receive, check, decapsulate, write into the tunnel
# device, and the kernel's routing of each packet it writes.
# Usage: crates/loadgen/bench-tunnel.sh NODES [SECONDS] [WORKERS] [QUEUES] [THREADS] [PER_SEND] [SIZE]
#   WORKERS: the HA's `workers`; QUEUES: its `worker_queues` (true/false);
#   THREADS: generator threads; PER_SEND: messages per UDP GSO send; SIZE: inner octets.
# Needs: cargo build --release -p mipsec -p loadgen
set -euo pipefail
n=${1:?nodes}; secs=${2:-5}; workers=${3:-2}; queues=${4:-true}; threads=${5:-1}
per_send=${6:-16}; size=${7:-1400}
bin=$(cd "$(dirname "$0")/../.." && pwd)/target/release
ns=mlt$$; dir=$(mktemp -d)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; ip netns del "$ns" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
ip netns add "$ns"; ip -n "$ns" link set lo up; ip -n "$ns" addr add 10.128.0.1/32 dev lo
ip -n "$ns" route add blackhole 10.200.0.0/16
cat > "$dir/ha.toml" <<TOML
[ha]
address = "10.128.0.1"
home_network = "10.128.0.0/9"
tunnel_device = "mlt0"
control_socket = "$dir/ha.sock"
key_file = "nodes.keys"
workers = $workers
worker_queues = $queues
TOML
"$bin/mipsec-loadgen" keys --first-home 10.129.0.0 --nodes "$n" --out "$dir/nodes.keys"
MIPSEC_LOG=${MIPSEC_LOG:-warn} ip netns exec "$ns" "$bin/mipsec" ha -c "$dir/ha.toml" 2>"$dir/ha.log" &
pid=$!
for _ in $(seq 600); do "$bin/mipsec" status -s "$dir/ha.sock" --summary >/dev/null 2>&1 && break; sleep 0.1; done
rx() { "$bin/mipsec" status -s "$dir/ha.sock" --json --summary | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["counters"]["rx_packets"])'; }
cpu() { awk '{print $14+$15}' /proc/$pid/stat; }
out=$(ip netns exec "$ns" "$bin/mipsec-loadgen" tunnel --ha 10.128.0.1 --first-home 10.129.0.0 \
  --nodes "$n" --duration "$secs" --bind 127.0.0.1:0 --threads "$threads" --per-send "$per_send" \
  --size "$size" | tee /dev/stderr)
# The counters and CPU from the first registration to the end of the sending.
sleep 0.2
r1=$(rx); t1=$(cpu)
sent=$(sed -n 's/.* nodes registered; \([0-9]*\) Tunnel Data messages in \([0-9.]*\) s.*/\1 \2/p' <<<"$out")
read -r nsent el <<<"$sent"
python3 - "$r1" "$nsent" "$el" "$t1" "$workers" "$queues" "$size" <<'PY'
import sys
rx, sent, el, ticks, workers, queues, size = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], int(sys.argv[7])
cpu = ticks / 100.0
print(f"workers {workers}, worker_queues {queues}: delivered {rx} of {sent} ({100.0 * rx / max(sent, 1):.1f} %), "
      f"{rx / el / 1e3:.0f} k packets/s, {rx * size * 8 / el / 1e6:.0f} Mbit/s inner, "
      f"HA CPU {cpu:.2f} s ({100 * cpu / el:.0f} % of a core), {1e6 * cpu / max(rx, 1):.2f} us per packet")
PY
"$bin/mipsec" status -s "$dir/ha.sock" --json --summary | python3 -c 'import json,sys; v=json.load(sys.stdin); print("per worker (datagrams, delivered, handed):", [(w["worker"], w["datagrams"], w["tunnel_data_delivered"], w["tunnel_data_handed"]) for w in v["workers"]]); print("drops:", v["counters"]["drops"])'
