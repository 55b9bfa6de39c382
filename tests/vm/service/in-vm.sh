#!/bin/sh
# Runs inside the test VM (tests/vm/service/rootfs.sh) as /payload/run.sh, as root: installs the
# edgeclass package and checks the service as systemd runs it. Prints one line per scenario,
#   SCENARIO <name> PASS|FAIL <detail>
# and `VMTEST DONE` at the end; tests/vm/service/run.sh asserts them on the serial console.
# /payload/env sets SCENARIOS (full | subset) and HUB_PATH (where the model is served).
set -u
# shellcheck source=/dev/null # written by run.sh
. /payload/env
UNIT=edgeclass
CONFIG=/etc/edgeclass/edgeclass.toml
CAMERA=vm_cam
PREFIX=edgeclass
MQTT_LOG=/run/vmtest-mqtt.log
failures=0

pass() { echo "SCENARIO $1 PASS $2"; }
fail() { echo "SCENARIO $1 FAIL $2"; failures=$((failures + 1)); }
prop() { systemctl show -P "$1" "$UNIT"; }
# wait_for SECONDS COMMAND...: polls COMMAND every half second.
wait_for() {
  deadline=$(( $(date +%s) + $1 )); shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}
count() { grep -c -- "$1" "$MQTT_LOG" 2>/dev/null || true; }
more_than() { [ "$(count "$1")" -gt "$2" ]; }
active_with_new_pid() { [ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" != "$1" ] && [ "$(prop MainPID)" != 0 ]; }
journal() { journalctl -q --no-pager -u "$UNIT" "$@"; }
# edgeclass's own lines (its logger's and its stderr's), not systemd's about the unit.
own_journal() { journalctl -q --no-pager -t edgeclass "$@"; }
# The PRIORITY of edgeclass's last journal entry containing TEXT (empty: no such entry).
priority_of() { own_journal -o json | grep -F "$1" | tail -n 1 | grep -o '"PRIORITY":"[0-9]"' | cut -d'"' -f4; }
# The configuration under test: the VM's broker and camera, every frame published.
write_config() { # THRESHOLD
  cat >"$CONFIG" <<TOML
[model]
weights = "/var/lib/edgeclass/resnet18-q8_0.gguf"
fetch = false
threads = 1
[postprocess]
threshold = $1
[publish_policy]
mode = "every"
[mqtt]
url = "mqtt://127.0.0.1:1883"
snapshot = { enabled = false }
[[cameras]]
id = "$CAMERA"
source = "v4l2:/dev/video0"
interval_ms = 500
width = 320
height = 240
[cameras.motion]
enabled = false
TOML
}
# The event JSON carries "unknown":true when the top-1 score is below the threshold.
events_since() { tail -n +"$1" "$MQTT_LOG" | grep "^$PREFIX/$CAMERA/event "; }
new_event_with() { events_since "$1" | grep -q "$2"; }

# The camera's device node gets its group (video) from udev.
udevadm settle
journalctl -q -b -o cat | grep -i 'ordering cycle' | sed 's/^/VMTEST NOTE /'
echo "VMTEST START $(uname -m) $(hostname) kernel $(uname -r) $(systemctl --version | head -n 1)"
mosquitto_sub -h 127.0.0.1 -v -t "$PREFIX/status" -t "$PREFIX/+/event" -t "$PREFIX/+/availability" \
  -t 'homeassistant/+/+/+/config' >"$MQTT_LOG" 2>&1 &

# ---- install ---------------------------------------------------------------------------------
# "install ok installed": the maintainer scripts ran and succeeded.
if out=$(dpkg -i /payload/edgeclass.deb 2>&1) && [ -f /lib/systemd/system/edgeclass.service ] &&
   [ "$(dpkg-query -W -f='${Status}' edgeclass)" = "install ok installed" ]; then
  pass install "dpkg -i: $(dpkg-query -W -f='${Package} ${Version} ${Architecture}: ${Status}' edgeclass)"
else
  fail install "dpkg -i: $(echo "$out" | tail -n 3 | tr '\n' ' ')"
  echo "VMTEST DONE failures=$((failures))"; exit 1
fi

# ---- model: fetch-model from a hub mirror served inside the VM --------------------------------
busybox httpd -p 127.0.0.1:8080 -h /payload/hub
t0=$(date +%s)
if out=$(edgeclass fetch-model --base-url http://127.0.0.1:8080 --sha256 "$MODEL_SHA256" 2>&1) &&
   [ -s /var/lib/edgeclass/resnet18-q8_0.gguf ]; then
  pass fetch-model "$(echo "$out" | tail -n 1) in $(( $(date +%s) - t0 )) s"
else
  fail fetch-model "$(echo "$out" | tail -n 3 | tr '\n' ' ')"
fi

# ---- start ----------------------------------------------------------------------------------
write_config 0.0
t0=$(date +%s)
systemctl enable --now "$UNIT" 2>/dev/null
state="$(prop ActiveState)/$(prop SubState)"
pid=$(prop MainPID)
if [ "$state" = active/running ] && [ "$(prop Type)" = notify ] && [ "$(prop StatusText)" != "" ]; then
  pass start "$state via READY=1 in $(( $(date +%s) - t0 )) s, pid $pid, status '$(prop StatusText)'"
else
  fail start "$state; $(journal -n 5 -o cat | tr '\n' ' ')"
fi

# ---- dynamic user, video group, the camera open -------------------------------------------------
uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
groups=$(awk '/^Groups:/ { $1 = ""; print }' "/proc/$pid/status" 2>/dev/null)
video_gid=$(getent group video | cut -d: -f3)
user=$(getent passwd "$uid" | cut -d: -f1)
camera_fd=0
for fd in "/proc/$pid/fd"/*; do
  [ "$(readlink "$fd")" = /dev/video0 ] && camera_fd=$((camera_fd + 1))
done
if [ -n "$uid" ] && [ "$uid" -ge 61184 ] && [ "$user" = edgeclass ] &&
   echo " $groups " | grep -q " $video_gid " && [ "$camera_fd" -ge 1 ]; then
  pass dynamic-user "uid $uid ($user, dynamic), groups$groups incl. video ($video_gid), /dev/video0 open"
else
  fail dynamic-user "uid '$uid' user '$user' groups '$groups' video '$video_gid' video0 fds $camera_fd"
fi

# ---- camera events over MQTT ----------------------------------------------------------------------
if wait_for 90 more_than "^$PREFIX/$CAMERA/event " 0; then
  pass camera-event "$(grep -m 1 "^$PREFIX/$CAMERA/event " "$MQTT_LOG" | cut -c 1-160)"
else
  fail camera-event "no event on $PREFIX/$CAMERA/event in 90 s; journal: $(journal -n 5 -o cat | tr '\n' ' ')"
fi

# ---- Home Assistant discovery carries the VM's host name --------------------------------------
node=$(hostname | tr '[:upper:]' '[:lower:]' | sed 's/[^a-z0-9]\{1,\}/_/g; s/^_//; s/_$//')
topic=$(grep -o "^homeassistant/sensor/[^ ]*/config" "$MQTT_LOG" | head -n 1)
if [ "$topic" = "homeassistant/sensor/$node/edgeclass_${node}_${CAMERA}_label/config" ]; then
  pass discovery-hostname "$topic (host name $(hostname))"
else
  fail discovery-hostname "topic '$topic', host name $(hostname)"
fi

# ---- the journal: edgeclass's own lines, with their priorities ----------------------------------
# The logger files log::info! at notice (5), warn at 4, error at 3 (systemd-journal-logger).
priority=$(priority_of '"MESSAGE":"ready: 1 camera(s)"')
if [ "$priority" = 5 ]; then
  pass journal-info "'ready: 1 camera(s)' at PRIORITY=5 (notice), SYSLOG_IDENTIFIER=edgeclass"
else
  fail journal-info "'ready' line at priority '$priority'; journal: $(journal -n 5 -o cat | tr '\n' ' ')"
fi

# ---- reload: thresholds re-read, same process -----------------------------------------------------
if [ "$SCENARIOS" = full ]; then
  # A bad file first: logged as an error, the running settings kept.
  cp "$CONFIG" /run/good.toml
  sed -i 's/^threshold = .*/threshold = "high"/' "$CONFIG"
  systemctl reload "$UNIT"
  if wait_for 10 sh -c "journalctl -q -t edgeclass -o cat | grep -q 'reload failed'" &&
     [ "$(priority_of '"MESSAGE":"reload failed')" = 3 ] &&
     [ "$(prop MainPID)" = "$pid" ] && [ "$(prop ActiveState)" = active ]; then
    pass journal-error "bad reload kept the settings, at PRIORITY=3: $(own_journal -o cat | grep 'reload failed' | tail -n 1 | cut -c 1-140)"
  else
    fail journal-error "priority '$(priority_of '"MESSAGE":"reload failed')', pid $(prop MainPID) (was $pid); $(journal -n 3 -o cat | tr '\n' ' ')"
  fi
  cp /run/good.toml "$CONFIG"
fi
lines=$(( $(wc -l <"$MQTT_LOG") + 1 ))
write_config 1.0
systemctl reload "$UNIT"
if wait_for 30 new_event_with "$lines" '"unknown":true' && [ "$(prop MainPID)" = "$pid" ]; then
  pass reload "threshold 0.0 -> 1.0: events now unknown, same pid $pid, journal: $(own_journal -o cat | grep 'reloaded' | tail -n 1 | cut -c 1-80)"
else
  fail reload "pid $(prop MainPID) (was $pid); $(events_since "$lines" | tail -n 1 | cut -c 1-200)"
fi

if [ "$SCENARIOS" = full ]; then
  # ---- a configuration error: status 78, no restart -------------------------------------------
  restarts=$(prop NRestarts)
  cp "$CONFIG" /run/good.toml
  sed -i 's/^threshold = .*/threshold = "high"/' "$CONFIG"
  systemctl restart "$UNIT" 2>/dev/null
  sleep 8   # longer than RestartSec=5s: a restart would have happened
  status=$(prop ExecMainStatus); state=$(prop ActiveState)
  # main's last words name the file and the key; stderr is the journal, filed at err by `<3>`.
  key_line=$(own_journal -o cat | grep '^edgeclass: .*postprocess.threshold' | tail -n 1)
  key_prio=$(priority_of '"MESSAGE":"edgeclass: config file')
  if [ "$status" = 78 ] && [ "$state" = failed ] && [ "$(prop NRestarts)" = "$restarts" ] &&
     [ -n "$key_line" ] && [ "$key_prio" = 3 ]; then
    pass config-error "exit status 78, $state, no restart (NRestarts $restarts), PRIORITY=3: $(echo "$key_line" | cut -c 1-120)"
  else
    fail config-error "status $status, $state, NRestarts $(prop NRestarts) (was $restarts), priority '$key_prio': $key_line"
  fi
  cp /run/good.toml "$CONFIG"
  systemctl reset-failed "$UNIT"
  systemctl start "$UNIT"
  pid=$(prop MainPID)

  # ---- SIGKILL: restarted, the last will says offline -----------------------------------------
  wait_for 60 more_than "^$PREFIX/$CAMERA/event " "$(count "^$PREFIX/$CAMERA/event ")"
  offline=$(count "^$PREFIX/status offline")
  restarts=$(prop NRestarts)
  kill -KILL "$pid"
  if wait_for 10 more_than "^$PREFIX/status offline" "$offline" &&
     wait_for 60 active_with_new_pid "$pid" && [ "$(prop NRestarts)" -gt "$restarts" ]; then
    pass sigkill "last will 'offline' on $PREFIX/status, restarted as pid $(prop MainPID), NRestarts $(prop NRestarts)"
  else
    fail sigkill "offline $(count "^$PREFIX/status offline") (was $offline), $(prop ActiveState) pid $(prop MainPID), NRestarts $(prop NRestarts)"
  fi
  pid=$(prop MainPID)

  # ---- a hang: the watchdog (WatchdogSec=30) aborts and restarts it ----------------------------
  wait_for 60 more_than "^$PREFIX/$CAMERA/event " "$(count "^$PREFIX/$CAMERA/event ")"
  t0=$(date +%s)
  kill -STOP "$pid"
  if wait_for 90 active_with_new_pid "$pid" &&
     journalctl -q -u "$UNIT" -o cat | grep -q 'Watchdog timeout'; then
    pass watchdog "SIGSTOP: '$(journalctl -q -u "$UNIT" -o cat | grep -m 1 'Watchdog timeout' | cut -c 1-60)', restarted as pid $(prop MainPID) after $(( $(date +%s) - t0 )) s"
  else
    fail watchdog "$(prop ActiveState) pid $(prop MainPID) (was $pid) after $(( $(date +%s) - t0 )) s; $(journal -n 3 -o cat | tr '\n' ' ')"
  fi
fi

# ---- stop: offline published, within 5 s ---------------------------------------------------------
wait_for 60 more_than "^$PREFIX/$CAMERA/event " "$(count "^$PREFIX/$CAMERA/event ")"
offline=$(count "^$PREFIX/status offline")
t0=$(date +%s%N)
systemctl stop "$UNIT"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
if [ "$ms" -le 5000 ] && wait_for 5 more_than "^$PREFIX/status offline" "$offline" &&
   [ "$(prop ActiveState)" = inactive ] && [ "$(prop Result)" = success ]; then
  pass stop "inactive in $ms ms, result $(prop Result), 'offline' on $PREFIX/status"
else
  fail stop "$(prop ActiveState) result $(prop Result) after $ms ms, offline $(count "^$PREFIX/status offline") (was $offline)"
fi

# ---- purge: unit, configuration and state gone --------------------------------------------------
if [ "$SCENARIOS" = full ]; then
  dpkg --purge edgeclass >/dev/null 2>&1
  left=""
  for path in /lib/systemd/system/edgeclass.service /usr/bin/edgeclass /etc/edgeclass \
              /var/lib/edgeclass /var/lib/private/edgeclass; do
    [ -e "$path" ] || [ -L "$path" ] && left="$left $path"
  done
  if [ -z "$left" ] && ! systemctl cat "$UNIT" >/dev/null 2>&1; then
    pass purge "unit, binary, /etc/edgeclass and the state directory removed"
  else
    fail purge "left behind:$left"
  fi
fi

echo "VMTEST DONE failures=$failures"
