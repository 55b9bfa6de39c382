#!/usr/bin/env bash
# What 10 live browsers cost the daemon: its CPU (utime+stime from /proc/PID/stat) over ROUND
# seconds, alternating rounds without clients and with 10 browser-like clients (each an
# /api/events stream plus /api/cameras and every camera's snapshot every 2 s). Two `file:`
# cameras at 1 fps, motion gate on, a heartbeat every second, seeded synthetic weights.
#
#   tests/bench/web_clients.sh [BINARY] [ROUND_S] [ROUNDS]    (default target/release/edgeclass 30 2)
#
# Needs curl and bc. Prints one line per round; the README's "Web page" quotes its figures.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
binary=${1:-$repo/target/release/edgeclass} round=${2:-30} rounds=${3:-2}
port=$((20000 + RANDOM % 20000)) broker=$((40000 + RANDOM % 20000))
dir=$(mktemp -d)
cat >"$dir/edgeclass.toml" <<TOML
[model]
synthetic_seed = 1
precision = "q8_0"
threads = 1
[publish_policy]
mode = "every"
heartbeat_s = 1
[mqtt]
embedded_listen = "127.0.0.1:$broker"
[web]
listen = "127.0.0.1:$port"
[[cameras]]
id = "kitchen"
source = "file:$repo/tests/fixtures/images/coffee.jpg"
interval_ms = 1000
[[cameras]]
id = "garden"
source = "file:$repo/tests/fixtures/images/chelsea.jpg"
interval_ms = 1000
TOML
"$binary" run --config "$dir/edgeclass.toml" >"$dir/daemon.log" 2>&1 &
daemon=$!
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
  sleep 0.5
done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$dir/daemon.log" >&2; exit 1; }

ticks() { awk '{ print $14 + $15 }' "/proc/$daemon/stat"; }
hz=$(getconf CLK_TCK)
cpu_over_round() {
  local a b
  a=$(ticks); sleep "$round"; b=$(ticks)
  printf '%.2f' "$(echo "scale=4; ($b - $a) * 100 / $hz / $round" | bc)"
}
clients() {
  for _ in $(seq 10); do
    curl -sN "http://127.0.0.1:$port/api/events" >/dev/null &
    (while true; do
       curl -s "http://127.0.0.1:$port/api/cameras" >/dev/null
       for camera in kitchen garden; do
         curl -s "http://127.0.0.1:$port/api/cameras/$camera/snapshot.jpg" >/dev/null
       done
       sleep 2
     done) &
  done
}
for r in $(seq "$rounds"); do
  without=$(cpu_over_round)
  clients
  sleep 1
  with=$(cpu_over_round)
  mapfile -t client_jobs < <(jobs -p | grep -vx "$daemon")
  kill "${client_jobs[@]}" 2>/dev/null || true
  echo "round $r: daemon CPU ${without} % of a core without clients, ${with} % with 10 clients"
done
