#!/bin/sh
# /init of the camera test VM (busybox sh). Loads vivid, then runs the scenarios named on the
# kernel command line (scenarios=a,b,...) in order against the edgeclass binary in /edgeclass,
# printing one line per scenario on the serial console:
#   SCENARIO <name> PASS <detail>   or   SCENARIO <name> FAIL <detail>
# followed by the daemon's log on failure, and `VM DONE` last. tests/vm/camera/run.sh asserts on
# these lines. Times come from /proc/uptime (centiseconds).
export PATH=/bin:/sbin:/edgeclass
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
ip link set lo up
ip addr add 127.0.0.1/8 dev lo 2>/dev/null
DEV=/dev/video0
W=/tmp/work
mkdir -p $W
BIN=/edgeclass/edgeclass
MODEL=/edgeclass/model.safetensors

now_cs() { read -r up _ </proc/uptime; echo "${up%.*}${up#*.}"; }
secs() { echo "$1" | awk '{ printf "%.2f", $1 / 100 }'; }
pass() { echo "SCENARIO $1 PASS $2"; }
fail() {
  echo "SCENARIO $1 FAIL $2"
  [ -f $W/log ] && sed 's/^/  log| /' $W/log | tail -n 40
}
# wait_count FILE REGEX COUNT TIMEOUT_S: until FILE has COUNT lines matching REGEX.
wait_count() {
  end=$(($(now_cs) + $4 * 100))
  while [ "$(grep -cE "$2" "$1" 2>/dev/null)" -lt "$3" ]; do
    [ "$(now_cs)" -ge $end ] && return 1
    sleep 0.05
  done
}
count() { grep -cE "$2" "$1" 2>/dev/null; }
ctl() { vivid-ctl $DEV set "$@" || echo "VM vivid-ctl set $* failed"; }

# config PIXEL_FORMAT [extra toml lines for the camera]: the daemon's config in $W/config.toml.
config() {
  cat >$W/config.toml <<TOML
[model]
weights = "$MODEL"
precision = "q8_0"
threads = 1

[postprocess]
threshold = 0.0

[publish_policy]
mode = "every"

[mqtt.snapshot]
enabled = false

[log]
print_events = true
level = "info"

[[cameras]]
id = "cam"
source = "v4l2:$DEV"
interval_ms = 200
width = 640
height = 360
fps = 25
timeout_ms = 2000
pixel_format = "$1"
$2

[cameras.motion]
enabled = false
TOML
}

start_daemon() {
  : >$W/events
  : >$W/log
  $BIN run --config $W/config.toml >$W/events 2>$W/log &
  DAEMON=$!
}
# stop_daemon: SIGTERM and wait (in this shell: a subshell cannot wait for it); STOP_CS is the
# centiseconds that took.
stop_daemon() {
  stop_start=$(now_cs)
  kill -TERM $DAEMON 2>/dev/null
  wait $DAEMON 2>/dev/null
  STOP_CS=$(($(now_cs) - stop_start))
}
alive() { kill -0 $DAEMON 2>/dev/null; }
events() { count $W/events '"top3"'; }
# "index score index score ..." of the first line's top3 array.
top3_of() {
  sed -n 's/.*"top3":\[\([^]]*\)\].*/\1/p' | head -n 1 |
    grep -oE '"index":[0-9]+|"score":[-0-9.e]+' | sed 's/"[a-z]*"://' | tr '\n' ' '
}

scenario_list() {
  t0=$(now_cs)
  if ! $BIN list-cameras >$W/list 2>&1; then fail list "list-cameras failed: $(cat $W/list)"; return; fi
  cat $W/list | head -n 3 | sed 's/^/  list| /'
  for want in "^$DEV" YUYV NV12 RGB3 GREY '320x180' '3840x2160'; do
    grep -qE "$want" $W/list || { fail list "no $want in: $(head -c 400 $W/list)"; return; }
  done
  pass list "$DEV with $(grep -cE '^ +[A-Z0-9]+ ' $W/list) format/size lines incl. YUYV NV12 RGB3 GREY, 320x180..3840x2160 ($(secs $(($(now_cs) - t0))) s)"
}

# One format: streams, reports the configured size and rate, delivers events.
stream_format() {
  name=$1 fourcc=$2
  config "$name"
  t0=$(now_cs)
  start_daemon
  if ! wait_count $W/events '"top3"' 5 90; then
    stop_daemon
    fail "stream-$name" "fewer than 5 events in 90 s ($(events))"
    return 1
  fi
  took=$(($(now_cs) - t0))
  stop_daemon
  line=$(grep -m1 'streaming' $W/log)
  case "$line" in
    *"streaming $fourcc 640x360 at 25 fps"*) ;;
    *) fail "stream-$name" "expected streaming $fourcc 640x360 at 25 fps, got: $line"; return 1 ;;
  esac
  seqs=$(grep -o '"frame":[0-9]*' $W/events | head -n 5 | sed 's/.*://' | tr '\n' ' ')
  pass "stream-$name" "$fourcc 640x360 at 25 fps, 5 events in $(secs $took) s (frames $seqs)"
}

scenario_stream() {
  stream_format yuyv YUYV && stream_format nv12 NV12 && stream_format rgb24 RGB3 &&
    stream_format gray GREY
}

scenario_mjpeg_fallback() {
  config mjpeg
  start_daemon
  if ! wait_count $W/events '"top3"' 2 90; then
    stop_daemon
    fail mjpeg-fallback "no events: $(grep -m1 -iE 'error|offline' $W/log)"
    return
  fi
  # A reopen would log again: disconnect once so the check covers it.
  ctl disconnect=1
  wait_count $W/log 'cam: online' 2 30
  stop_daemon
  n=$(count $W/log 'no MJPEG')
  errors=$(count $W/log ' ERROR | WARN .*(mjpeg|MJPEG)')
  if [ "$n" = 1 ] && [ "$errors" = 0 ]; then
    pass mjpeg-fallback "$(grep -m1 'no MJPEG' $W/log | sed 's/.*camera/camera/')"
  else
    fail mjpeg-fallback "$n 'no MJPEG' lines, $errors errors/warnings about MJPEG"
  fi
}

# The daemon's Top-3 of a (still) camera frame equals `classify` on that frame saved to a file.
scenario_top3() {
  # Without the on-screen text (time, frame counter) every frame of the colour bars is the same.
  ctl osd_text_mode=2
  vivid-ctl $DEV grab-rgb24 640 360 $W/frame.ppm || { fail top3 "cannot grab a frame"; return; }
  config rgb24
  start_daemon
  wait_count $W/events '"top3"' 2 90
  stop_daemon
  daemon=$(grep -m1 '"top3"' $W/events | top3_of)
  $BIN classify --json --precision q8_0 --threads 1 --weights $MODEL $W/frame.ppm >$W/classify 2>&1
  file=$(grep '"top3"' $W/classify | top3_of)
  ctl osd_text_mode=0
  echo "TOP3 $file"
  if [ -n "$daemon" ] && [ "$daemon" = "$file" ]; then
    pass top3 "daemon = classify = $file"
  else
    fail top3 "daemon [$daemon] != classify [$file] $(head -c 300 $W/classify)"
  fi
}

# Disconnect mid-stream: offline within 2 s, online again by itself.
scenario_disconnect() {
  config yuyv
  start_daemon
  if ! wait_count $W/events '"top3"' 2 90; then
    stop_daemon; fail disconnect "never streamed"; return
  fi
  t0=$(now_cs)
  ctl disconnect=1
  wait_count $W/log 'cam: offline' 1 10
  t_off=$(($(now_cs) - t0))
  wait_count $W/log 'cam: online' 2 30
  t_on=$(($(now_cs) - t0))
  before=$(events)
  wait_count $W/events '"top3"' $((before + 2)) 30
  after=$(events)
  stop_daemon
  if [ "$(count $W/log 'cam: offline')" -ge 1 ] && [ $t_off -le 200 ] && [ "$(count $W/log 'cam: online')" = 2 ] &&
     [ "$after" -gt "$before" ]; then
    pass disconnect "offline after $(secs $t_off) s, online after $(secs $t_on) s, events resumed ($before -> $after)"
  else
    fail disconnect "offline after $(secs $t_off) s ($(count $W/log 'cam: offline') lines), online lines $(count $W/log 'cam: online'), events $before -> $after"
  fi
}

# Device removed (unbind) and back (bind), same daemon.
scenario_unbind() {
  config yuyv
  start_daemon
  if ! wait_count $W/events '"top3"' 2 90; then
    stop_daemon; fail unbind "never streamed"; return
  fi
  pid=$DAEMON
  echo vivid.0 >/sys/bus/platform/drivers/vivid/unbind
  t0=$(now_cs)
  wait_count $W/log 'cam: offline' 1 10
  t_off=$(($(now_cs) - t0))
  # Long enough for three attempts (after 1, 2 and 4 s of backoff).
  sleep 8
  gone=$([ -e $DEV ] && echo present || echo gone)
  offline_lines=$(count $W/log 'cam: offline')
  echo vivid.0 >/sys/bus/platform/drivers/vivid/bind
  t1=$(now_cs)
  wait_count $W/log 'cam: online' 2 60
  t_on=$(($(now_cs) - t1))
  stop_daemon
  if [ "$gone" = gone ] && [ "$offline_lines" = 1 ] && [ "$(count $W/log 'cam: online')" = 2 ] && [ "$pid" = "$DAEMON" ]; then
    pass unbind "$DEV $gone, offline after $(secs $t_off) s, 1 offline line in 8 s of retries, online $(secs $t_on) s after bind"
  else
    fail unbind "$DEV $gone, offline lines $offline_lines, online lines $(count $W/log 'cam: online')"
  fi
}

# Injected buffer errors and dropped buffers: counted, logged, the stream goes on.
scenario_errors() {
  config yuyv
  start_daemon
  if ! wait_count $W/events '"top3"' 2 90; then
    stop_daemon; fail errors "never streamed"; return
  fi
  for _ in 1 2 3; do ctl inject_v4l2_buf_flag_error=1; sleep 0.3; done
  ctl percentage_of_dropped_buffers=50
  sleep 3
  ctl percentage_of_dropped_buffers=0
  before=$(events)
  wait_count $W/events '"top3"' $((before + 3)) 30
  after=$(events)
  # The counts are logged at most every 10 s.
  wait_count $W/log ' [1-9][0-9]* buffer errors and [1-9][0-9]* dropped' 1 25
  line=$(grep 'buffer errors' $W/log | tail -n 1 | sed 's/.*camera/camera/')
  up=$(alive && echo running || echo exited)
  stop_daemon
  errors=$(echo "$line" | sed -n 's/.* \([0-9]*\) buffer errors.*/\1/p')
  dropped=$(echo "$line" | sed -n 's/.* \([0-9]*\) dropped frames.*/\1/p')
  if [ "$up" = running ] && [ "${errors:-0}" -ge 1 ] && [ "${dropped:-0}" -ge 1 ] &&
     [ "$after" -gt "$before" ] && [ "$(count $W/log 'cam: offline')" = 0 ]; then
    pass errors "$line; events $before -> $after, never offline"
  else
    fail errors "daemon $up, line [$line], events $before -> $after, offline lines $(count $W/log 'cam: offline')"
  fi
}

# A camera that stops delivering without an error: capture timeout, offline, reopened; SIGTERM
# while it is stalled ends the daemon within 5 s.
scenario_stall() {
  config yuyv
  start_daemon
  if ! wait_count $W/events '"top3"' 2 90; then
    stop_daemon; fail stall "never streamed"; return
  fi
  ctl percentage_of_dropped_buffers=100
  t0=$(now_cs)
  wait_count $W/log 'cam: offline' 1 20
  t_off=$(($(now_cs) - t0))
  reason=$(grep -m1 'cam: offline' $W/log | sed 's/.*offline: //')
  sleep 4
  ctl percentage_of_dropped_buffers=0
  t1=$(now_cs)
  wait_count $W/log 'cam: online' 2 60
  t_on=$(($(now_cs) - t1))
  ctl percentage_of_dropped_buffers=100
  wait_count $W/log 'cam: offline' 2 20
  sleep 1
  stop_daemon
  stop_cs=$STOP_CS
  ctl percentage_of_dropped_buffers=0
  case "$reason" in *timeout*) timed_out=yes ;; *) timed_out=no ;; esac
  if [ $timed_out = yes ] && [ "$(count $W/log 'cam: online')" = 2 ] && [ "$(count $W/log 'cam: offline')" = 2 ] &&
     [ "$stop_cs" -le 500 ]; then
    pass stall "offline after $(secs $t_off) s ($reason), reopened online $(secs $t_on) s after frames resumed, SIGTERM while stalled exited in $(secs $stop_cs) s"
  else
    fail stall "reason [$reason] after $(secs $t_off) s, online lines $(count $W/log 'cam: online'), offline lines $(count $W/log 'cam: offline'), SIGTERM took $(secs $stop_cs) s"
  fi
}

for arg in $(cat /proc/cmdline); do
  case "$arg" in scenarios=*) SCENARIOS=$(echo "${arg#scenarios=}" | tr , ' ') ;; esac
done
echo "VM $(uname -m) $(uname -r) up in $(secs $(now_cs)) s"
if modprobe vivid n_devs=1 node_types=0x1 && [ -e $DEV ]; then
  ctl osd_text_mode=0 >/dev/null 2>&1
  for s in $SCENARIOS; do
    started=$(now_cs)
    echo "VM scenario $s starts at $(secs $started) s"
    case "$s" in
      list) scenario_list ;;
      stream) scenario_stream ;;
      mjpeg-fallback) scenario_mjpeg_fallback ;;
      top3) scenario_top3 ;;
      disconnect) scenario_disconnect ;;
      unbind) scenario_unbind ;;
      errors) scenario_errors ;;
      stall) scenario_stall ;;
      *) echo "SCENARIO $s FAIL unknown scenario" ;;
    esac
    echo "VM scenario $s took $(secs $(($(now_cs) - started))) s"
  done
else
  echo "VM FAIL cannot load vivid"
fi
echo "VM DONE"
poweroff -f
