#!/usr/bin/env bash
# Measures `mipsec ha` with mipsec-loadgen in a network namespace of its own (root).
# Usage: crates/loadgen/bench.sh NODES [RENEW_SECONDS] [HA_CPUS] [GEN_CPUS] [WORKERS] [THREADS]
#   HA_CPUS / GEN_CPUS: taskset lists ("0", "0,1"); WORKERS: the HA's `workers`;
#   THREADS: generator threads.
# Needs: cargo build --release -p mipsec -p loadgen
set -euo pipefail
n=${1:?nodes}; secs=${2:-10}; ha_cpu=${3:-0}; gen_cpu=${4:-1}; workers=${5:-1}; threads=${6:-1}
bin=$(cd "$(dirname "$0")/../.." && pwd)/target/release
ns=mlg$$; dir=$(mktemp -d)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; ip netns del "$ns" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
ip netns add "$ns"; ip -n "$ns" link set lo up; ip -n "$ns" addr add 10.128.0.1/32 dev lo
cat > "$dir/ha.toml" <<TOML
[ha]
address = "10.128.0.1"
home_network = "10.128.0.0/9"
tunnel_device = "mlg0"
control_socket = "$dir/ha.sock"
key_file = "nodes.keys"
workers = $workers
TOML
"$bin/mipsec-loadgen" keys --first-home 10.129.0.0 --nodes "$n" --out "$dir/nodes.keys"
MIPSEC_LOG=${MIPSEC_LOG:-warn} ip netns exec "$ns" taskset -c "$ha_cpu" "$bin/mipsec" ha -c "$dir/ha.toml" 2>"$dir/ha.log" &
pid=$!
for _ in $(seq 600); do "$bin/mipsec" status -s "$dir/ha.sock" --summary >/dev/null 2>&1 && break; sleep 0.1; done
t0=$(awk '{print $14+$15}' /proc/$pid/stat)
ip netns exec "$ns" taskset -c "$gen_cpu" "$bin/mipsec-loadgen" run --ha 10.128.0.1 \
  --first-home 10.129.0.0 --nodes "$n" --duration "$secs" --bind 127.0.0.1:0 --verify --threads "$threads"
t1=$(awk '{print $14+$15}' /proc/$pid/stat)
echo "HA CPU during the run: $(( (t1 - t0) * 10 )) ms (user+system), workers $workers, generator threads $threads"
"$bin/mipsec" status -s "$dir/ha.sock" --json --summary | python3 -c 'import json,sys; print("per worker:", [(w["worker"], w["datagrams"], w["other_shard"]) for w in json.load(sys.stdin)["workers"]])' 
echo "HA RSS: $(awk '/VmRSS/{print $2, $3}' /proc/$pid/status)"
for args in "" "--summary" "--bindings --limit 1000"; do
  s=$(date +%s%N); bytes=$("$bin/mipsec" status -s "$dir/ha.sock" --json $args | wc -c); e=$(date +%s%N)
  echo "status $args: $bytes octets in $(( (e - s) / 1000000 )) ms"
done
