#!/usr/bin/env bash
# What the web page costs the daemon: its CPU (utime+stime from /proc/PID/stat) over ROUND
# seconds, alternating rounds without clients and with 10 browser-like clients (each an
# /api/events stream plus /api/cameras and every camera's snapshot every 2 s), next to a second
# daemon with `[web] enabled = false` measured over the same windows. Two `file:` cameras at
# 1 fps, motion gate on, a heartbeat every second, seeded synthetic weights.
#
#   tests/bench/web_clients.sh [BINARY] [ROUND_S] [ROUNDS]    (default target/release/edgeclass 30 2)
#
# Needs curl and bc. Prints one line per round; the README's "Web page" quotes its figures.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
binary=${1:-$repo/target/release/edgeclass} round=${2:-30} rounds=${3:-2}
port=$((20000 + RANDOM % 20000)) broker=$((40000 + RANDOM % 20000))
dir=$(mktemp -d)
# config WEB_TABLE BROKER_PORT
config() {
cat <<TOML
[model]
synthetic_seed = 1
precision = "q8_0"
threads = 1
[publish_policy]
mode = "every"
heartbeat_s = 1
[mqtt]
embedded_listen = "127.0.0.1:$2"
[web]
$1
[[cameras]]
id = "kitchen"
source = "file:$repo/tests/fixtures/images/coffee.jpg"
interval_ms = 1000
[[cameras]]
id = "garden"
source = "file:$repo/tests/fixtures/images/chelsea.jpg"
interval_ms = 1000
TOML
}
config "listen = \"127.0.0.1:$port\"" "$broker" >"$dir/edgeclass.toml"
config "enabled = false" "$((broker + 1))" >"$dir/no-web.toml"
"$binary" run --config "$dir/edgeclass.toml" >"$dir/daemon.log" 2>&1 &
daemon=$!
"$binary" run --config "$dir/no-web.toml" >"$dir/no-web.log" 2>&1 &
no_web=$!
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
  sleep 0.5
done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$dir/daemon.log" >&2; exit 1; }

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
percent() { printf '%.2f' "$(echo "scale=4; ($2 - $1) * 100 / $hz / $round" | bc)"; }
# Sets `web` and `off`: the CPU of both daemons over the same ROUND seconds, % of a core.
cpu_over_round() {
  local a b c d
  a=$(ticks "$daemon"); c=$(ticks "$no_web"); sleep "$round"; b=$(ticks "$daemon"); d=$(ticks "$no_web")
  web=$(percent "$a" "$b") off=$(percent "$c" "$d")
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
  cpu_over_round
  without=$web off_without=$off
  clients
  sleep 1
  cpu_over_round
  mapfile -t client_jobs < <(jobs -p | grep -vx -e "$daemon" -e "$no_web")
  kill "${client_jobs[@]}" 2>/dev/null || true
  echo "round $r: daemon CPU (% of a core) [web] on: ${without} without clients, ${web} with 10" \
    "clients; [web] enabled = false over the same windows: ${off_without}, ${off}"
done
