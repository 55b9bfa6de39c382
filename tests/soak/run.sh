#!/usr/bin/env bash
# Soak: what a Pi sees in a year, compressed. The daemon (release build, seeded synthetic weights,
# one thread) runs MINUTES with four cameras: three `file:` folders and one HTTP snapshot source
# that answers 500 to 10 % of requests and stalls past the camera's timeout on 2 %. A real
# mosquitto (persistence on) is restarted every 5 minutes and the daemon gets SIGHUP every
# minute. Every SAMPLE_S seconds it records, from /proc and /metrics, the daemon's RSS, open file
# descriptors, CPU time and frames processed. A persistent-session subscriber (QoS 1, clean
# session off, the same client id across broker restarts) records every event, and at the end
# every `seq` the daemon printed is looked for in what the subscriber received.
#
#   tests/soak/run.sh [MINUTES] [BINARY]     (default 60 target/release/edgeclass)
#
# Environment: SOAK_INTERVAL_MS (frame interval per camera, 1000), SOAK_SAMPLE_S (10),
# SOAK_WARMUP_MIN (minutes excluded from the growth checks, default MINUTES/6, at most 10),
# SOAK_BROKER_RESTART_S (300), SOAK_HUP_S (60), SOAK_DIR (where logs and samples stay; default
# target/tmp/soak-DATE).
#
# Not run in CI (it takes an hour). Needs mosquitto, mosquitto_sub, curl, python3. Prints a table
# per period and a verdict per criterion; exits 1 when a criterion fails.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
minutes=${1:-60}
binary=${2:-$repo/target/release/edgeclass}
interval_ms=${SOAK_INTERVAL_MS:-1000}
sample_s=${SOAK_SAMPLE_S:-10}
warmup_min=${SOAK_WARMUP_MIN:-$(( minutes / 6 > 10 ? 10 : (minutes / 6 < 1 ? 1 : minutes / 6) ))}
broker_restart_s=${SOAK_BROKER_RESTART_S:-300}
hup_s=${SOAK_HUP_S:-60}
dir=${SOAK_DIR:-$repo/target/tmp/soak-$(date -u +%Y%m%dT%H%M%SZ)}

for tool in /usr/sbin/mosquitto mosquitto_sub curl python3; do
  command -v "$tool" >/dev/null || { echo "soak: $tool is missing (sudo .ci/setup installs it)" >&2; exit 1; }
done
[[ -x $binary ]] || { echo "soak: no binary at $binary (cargo build --release --locked)" >&2; exit 1; }
mkdir -p "$dir"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
broker_port=$(free_port) http_port=$(free_port) web_port=$(free_port)

pids=()
cleanup() {
  for pid in "${pids[@]}" ${broker_pid:-}; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# --- the broker: persistence on, so the subscriber's session survives a restart --------------
mkdir -p "$dir/mosquitto"
cat >"$dir/mosquitto/mosquitto.conf" <<CONF
per_listener_settings false
allow_anonymous true
persistence true
persistence_location $dir/mosquitto/
max_queued_messages 100000
user root
log_dest file $dir/mosquitto/mosquitto.log
log_type error
log_type warning
log_type notice
listener $broker_port 127.0.0.1
CONF
start_broker() {
  /usr/sbin/mosquitto -c "$dir/mosquitto/mosquitto.conf" 2>>"$dir/mosquitto/stderr.log" &
  broker_pid=$!
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$broker_port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "soak: mosquitto did not listen on $broker_port" >&2
  exit 1
}
start_broker

# --- the flaky HTTP camera: 10 % errors, 2 % stalls past the camera's timeout ---------------
python3 - "$http_port" "$repo/tests/fixtures/images" "$dir/http.log" <<'PY' &
import http.server, os, random, sys, time
port, folder, log = int(sys.argv[1]), sys.argv[2], open(sys.argv[3], "a", buffering=1)
photos = [open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder)) if n.endswith(".jpg")]
rng, count = random.Random(15), [0]
class Camera(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        count[0] += 1
        roll = rng.random()
        if roll < 0.10:
            log.write("500\n")
            self.send_error(500, "flaky camera")
            return
        if roll < 0.12:
            log.write("stall\n")
            time.sleep(6)
        else:
            log.write("200\n")
        body = photos[count[0] % len(photos)]
        try:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the daemon gave up on a stalled request
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Camera).serve_forever()
PY
pids+=($!)

# --- the auditing subscriber: QoS 1, persistent session, reconnects with the same id ---------
(
  while true; do
    mosquitto_sub -h 127.0.0.1 -p "$broker_port" -i soak-audit -c -q 1 -t 'edgeclass/+/event' -v \
      >>"$dir/subscriber.log" 2>>"$dir/subscriber.err" || true
    sleep 0.5
  done
) &
pids+=($!)
sleep 1  # the session exists before the first event

# --- the daemon ----------------------------------------------------------------------------
cat >"$dir/edgeclass.toml" <<TOML
[model]
synthetic_seed = 1
precision = "q8_0"
threads = 1
[publish_policy]
mode = "every"
[mqtt]
url = "mqtt://127.0.0.1:$broker_port"
qos = 1
client_id = "soak-daemon"
reconnect_max_ms = 2000
[mqtt.discovery]
enabled = false
[web]
listen = "127.0.0.1:$web_port"
[log]
level = "info"
print_events = true
TOML
for camera in folder1 folder2 folder3; do
  cat >>"$dir/edgeclass.toml" <<TOML
[[cameras]]
id = "$camera"
source = "file:$repo/tests/fixtures/images"
interval_ms = $interval_ms
[cameras.motion]
enabled = false
TOML
done
cat >>"$dir/edgeclass.toml" <<TOML
[[cameras]]
id = "flaky"
source = "http://127.0.0.1:$http_port/snapshot.jpg"
interval_ms = $interval_ms
timeout_ms = 2000
[cameras.motion]
enabled = false
TOML
"$binary" run --config "$dir/edgeclass.toml" >"$dir/events.jsonl" 2>"$dir/daemon.log" &
daemon=$!
pids+=("$daemon")
for _ in $(seq 240); do
  curl -sf "http://127.0.0.1:$web_port/healthz" >/dev/null && break
  kill -0 "$daemon" 2>/dev/null || { cat "$dir/daemon.log" >&2; exit 1; }
  sleep 0.5
done

# --- the run: sample, SIGHUP, broker restarts ------------------------------------------------
hz=$(getconf CLK_TCK)
frames() {
  curl -sf --max-time 5 "http://127.0.0.1:$web_port/metrics" |
    awk '/^edgeclass_frames_processed_total/ { n += $NF } END { printf "%d", n }'
}
sample() {
  local rss fds ticks
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$daemon/status")
  fds=$(find "/proc/$daemon/fd" -mindepth 1 -maxdepth 1 | wc -l)
  ticks=$(awk '{ print $14 + $15 }' "/proc/$daemon/stat")
  echo "$1 $rss $fds $ticks $(frames || echo -1)" >>"$dir/samples.txt"
}
echo "elapsed_s rss_kb fds cpu_ticks frames_processed" >"$dir/samples.txt"
echo "soak: $minutes min, logs in $dir (broker $broker_port, camera $http_port, web $web_port)" >&2
start=$SECONDS end=$((SECONDS + minutes * 60))
next_sample=$start next_hup=$((start + hup_s)) next_restart=$((start + broker_restart_s))
hups=0 restarts=0
while ((SECONDS < end)); do
  kill -0 "$daemon" 2>/dev/null || { echo "soak: the daemon died" >&2; tail -20 "$dir/daemon.log" >&2; exit 1; }
  now=$SECONDS
  if ((now >= next_sample)); then sample $((now - start)); next_sample=$((next_sample + sample_s)); fi
  if ((now >= next_hup)); then kill -HUP "$daemon"; hups=$((hups + 1)); next_hup=$((next_hup + hup_s)); fi
  if ((now >= next_restart)); then
    kill "$broker_pid"; wait "$broker_pid" 2>/dev/null || true
    sleep 2  # the daemon and the subscriber see a refused connection for a moment
    start_broker
    restarts=$((restarts + 1)) next_restart=$((next_restart + broker_restart_s))
  fi
  sleep 1
done
sample $((SECONDS - start))

# SIGTERM flushes the daemon's queue; then give the subscriber a moment to receive the rest.
kill -TERM "$daemon"
wait "$daemon" 2>/dev/null && daemon_status=0 || daemon_status=$?
sleep 3

# --- the summary ------------------------------------------------------------------------------
python3 - "$dir" "$hz" "$warmup_min" "$minutes" "$hups" "$restarts" "$daemon_status" <<'PY'
import collections, json, sys
d, hz, warmup_min, minutes, hups, restarts, status = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], int(sys.argv[7])
rows = [list(map(int, l.split())) for l in open(f"{d}/samples.txt").read().splitlines()[1:]]
period = max(60, minutes * 60 // 6)
http = collections.Counter(open(f"{d}/http.log").read().split())
connects = sum("connected to MQTT broker" in l for l in open(f"{d}/daemon.log"))
print(f"\nsoak: {minutes} min, {hups} SIGHUPs, {restarts} broker restarts ({connects} MQTT connects), "
      f"HTTP camera answered {http['200']} x 200, {http['500']} x 500, stalled {http['stall']} times; "
      f"warm-up {warmup_min} min\n")
print("| minutes | RSS (MB) | open fds | frames in period | CPU per frame (ms) |")
print("|---|---|---|---|---|")
buckets, start = [], rows[0]
for r in rows[1:]:
    if r[0] >= (len(buckets) + 1) * period or r is rows[-1]:
        df, dt = r[4] - start[4], r[3] - start[3]
        cpu = 1000.0 * dt / hz / df if df > 0 else float("nan")
        buckets.append((start, r, df, cpu))
        print(f"| {start[0] / 60:.0f}-{r[0] / 60:.0f} | {r[1] / 1024:.1f} | {r[2]} | {df} | {cpu:.1f} |")
        start = r
after = [r for r in rows if r[0] >= warmup_min * 60]
ok = True
def verdict(name, value, passed):
    global ok
    ok &= passed
    print(f"| {name} | {value} | {'PASS' if passed else 'FAIL'} |")
print("\n| criterion | measured | |\n|---|---|---|")
growth = after[-1][1] - after[0][1]
verdict("RSS growth after warm-up (< 1 MB)", f"{growth / 1024:+.2f} MB ({after[0][1] / 1024:.1f} -> {after[-1][1] / 1024:.1f}, max {max(r[1] for r in after) / 1024:.1f})", growth < 1024)
fds = [r[2] for r in after]
verdict("open fds after warm-up (flat: last - first <= 2)", f"first {fds[0]}, last {fds[-1]}, min {min(fds)}, max {max(fds)}", fds[-1] - fds[0] <= 2)
printed = collections.defaultdict(set)
for line in open(f"{d}/events.jsonl"):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    printed[e["camera"]].add(e["seq"])
received, duplicates = collections.defaultdict(set), 0
for line in open(f"{d}/subscriber.log"):
    topic, _, payload = line.partition(" ")
    try:
        e = json.loads(payload)
    except ValueError:
        continue
    if e["seq"] in received[e["camera"]]:
        duplicates += 1
    received[e["camera"]].add(e["seq"])
missing = {c: sorted(s - received[c]) for c, s in printed.items()}
gaps = sum(len(m) for m in missing.values())
total = sum(len(s) for s in printed.values())
detail = ", ".join(f"{c} {len(printed[c])} (max seq {max(printed[c])})" for c in sorted(printed))
verdict("seq gaps (events printed, not received)", f"{gaps} of {total}; {detail}; {duplicates} duplicates", gaps == 0 and total > 0)
first, last = next((b for b in buckets if b[0][0] >= warmup_min * 60), buckets[0]), buckets[-1]
ratio = last[3] / first[3] if first[3] > 0 else float("nan")
verdict("CPU per frame, last period / first after warm-up (flat: 0.8-1.25)", f"{first[3]:.1f} -> {last[3]:.1f} ms, x{ratio:.2f}", 0.8 <= ratio <= 1.25)
verdict("daemon stopped cleanly on SIGTERM", f"exit {status}", status == 0)
for c, m in missing.items():
    if m:
        print(f"missing on {c}: {m[:20]}{' ...' if len(m) > 20 else ''}")
sys.exit(0 if ok else 1)
PY
