#!/usr/bin/env bash
# What a static 1080p MJPEG scene at 30 fps costs the daemon: its CPU (utime+stime from
# /proc/PID/stat) over ROUND seconds, with `[preprocess] exact = false` (the default: the motion
# gate judges each frame on its 1/8-scale decode) and `exact = true` (every frame decoded at full
# size before the gate), both daemons measured over the same window, in ROUNDS rounds. The frame
# is a fixture photo made into a 1920x1080 quality-90 JPEG by `bench --frames --save-frames`,
# delivered by a `file:` camera every 33 ms; seeded synthetic weights, motion gate on.
#
#   tests/bench/static_scene.sh [BINARY] [ROUND_S] [ROUNDS]    (default target/release/edgeclass 60 2)
#
# Needs bc. Prints one line per round; the README's "Performance" section quotes its figures.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
binary=${1:-$repo/target/release/edgeclass} round=${2:-60} rounds=${3:-2}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
mkdir "$dir/frames"
"$binary" bench --frames --images "$repo/tests/fixtures/images" --save-frames "$dir/frames" \
  --runs 1 --warmup 0 >/dev/null
frame=$dir/frames/chelsea-1920x1080.jpg
daemons=()
for exact in false true; do
  cat >"$dir/$exact.toml" <<TOML
[model]
synthetic_seed = 1
precision = "q8_0"
threads = 1
[preprocess]
exact = $exact
[mqtt]
embedded_listen = "127.0.0.1:$((40000 + RANDOM % 20000))"
[[cameras]]
id = "static"
source = "file:$frame"
interval_ms = 33
TOML
  "$binary" run --config "$dir/$exact.toml" >"$dir/$exact.log" 2>&1 &
  daemons+=($!)
done
sleep 5 # start-up (model synthesis, first classification) is not the steady state
for pid in "${daemons[@]}"; do
  kill -0 "$pid" 2>/dev/null || { cat "$dir"/*.log >&2; exit 1; }
done
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
percent() { printf '%.2f' "$(echo "scale=4; ($2 - $1) * 100 / $hz / $round" | bc)"; }
for r in $(seq "$rounds"); do
  fast_a=$(ticks "${daemons[0]}") exact_a=$(ticks "${daemons[1]}")
  sleep "$round"
  fast_b=$(ticks "${daemons[0]}") exact_b=$(ticks "${daemons[1]}")
  echo "round $r: daemon CPU $(percent "$fast_a" "$fast_b") % of a core with exact = false," \
    "$(percent "$exact_a" "$exact_b") % with exact = true"
done
