#!/usr/bin/env bash
# What a static 1080p MJPEG scene at 30 fps costs the daemon: its CPU (utime+stime from
# /proc/PID/stat) over ROUND seconds, with `[preprocess] exact = false` (the default: the motion
# gate judges a frame on its 1/8-scale decode) and `exact = true` (a frame decoded at full size
# before the gate), both daemons measured over the same window, in ROUNDS rounds. The scene is a
# fixture photo made into 1920x1080 quality-90 JPEGs by `bench --frames --save-frames`: two
# copies with different sensor noise, as a camera's frames of a static scene differ, delivered
# alternately by a `file:` camera every 33 ms; seeded synthetic weights, motion gate on with
# `idle_fps` IDLE_FPS (the default 5; 0 judges every frame, as before `idle_fps` existed).
#
#   tests/bench/static_scene.sh [BINARY] [ROUND_S] [ROUNDS] [IDLE_FPS]
#                                            (default target/release/edgeclass 60 2 5)
#
# Needs bc. Prints one line per round, then what each daemon logged about its frames at exit;
# the README's "Frame path" section quotes its figures.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
binary=${1:-$repo/target/release/edgeclass} round=${2:-60} rounds=${3:-2} idle_fps=${4:-5}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$dir"' EXIT
mkdir "$dir/frames" "$dir/scene"
"$binary" bench --frames --images "$repo/tests/fixtures/images" --save-frames "$dir/frames" \
  --runs 1 --warmup 0 >/dev/null
mv "$dir"/frames/chelsea-1920x1080-noise[12].jpg "$dir/scene/"
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
source = "file:$dir/scene"
interval_ms = 33
[cameras.motion]
idle_fps = $idle_fps
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
kill "${daemons[@]}"
wait "${daemons[@]}" 2>/dev/null || true
for exact in false true; do
  echo "exact = $exact: $(grep -ho 'motion gate: .*\|[0-9]* frames processed.*' "$dir/$exact.log" | paste -sd ';' -)"
done
