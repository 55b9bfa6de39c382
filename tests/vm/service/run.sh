#!/usr/bin/env bash
# The edgeclass .deb as a user installs it: boots a Debian VM (systemd as PID 1, mosquitto, a vivid
# camera, no network) under QEMU, installs the package with dpkg and checks the service under
# systemd: start via READY=1, dynamic user with the camera, events over MQTT, discovery with the
# VM's host name, journal priorities, reload, a config error (78, no restart), SIGKILL, the
# watchdog, stop and purge. Run as root; the VM is built once into CACHEDIR (rootfs.sh).
#
#   tests/vm/service/run.sh <amd64|arm64> PACKAGE.deb [full|subset]
#
# subset: install, fetch-model, start, dynamic user, camera event, discovery, journal, reload and
# stop (what an emulated arm64 VM runs in CI's time). Default: full.
# Env: EDGECLASS_VM_CACHE (default /var/cache/edgeclass-ci/vm-service/ARCH), VM_LOG (the serial
# console, default target/vm-service-ARCH.log), VM_TIMEOUT (seconds, default 900).
set -euo pipefail
usage() { sed -n '8,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 64; }
if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage; fi
arch=$1 deb=$2 scenarios=${3:-full}
case "$arch" in amd64 | arm64) ;; *) usage ;; esac
case "$scenarios" in full | subset) ;; *) usage ;; esac
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
cache=${EDGECLASS_VM_CACHE:-/var/cache/edgeclass-ci/vm-service/$arch}
log=${VM_LOG:-$repo/target/vm-service-$arch.log}
fail() { printf 'vm-service %s: FAILED: %s\n' "$arch" "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root (mmdebstrap, mkfs)"
[ -f "$deb" ] || fail "$deb: no such package"
[ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || fail "$deb is not an $arch package"
declare -A QEMU=([amd64]=qemu-system-x86_64 [arm64]=qemu-system-aarch64)
for tool in mmdebstrap "${QEMU[$arch]}" mkfs.ext4 cpio depmod; do
  command -v "$tool" >/dev/null || fail "$tool missing: run .ci/setup"
done
[ -x /usr/share/mmdebstrap/hooks/merged-usr/setup00.sh ] || fail "mmdebstrap hooks missing: run .ci/setup"

EXPECTED=(install fetch-model start dynamic-user camera-event discovery-hostname journal-info)
if [ "$scenarios" = full ]; then
  EXPECTED+=(journal-error reload config-error sigkill watchdog stop purge)
else
  EXPECTED+=(reload stop)
fi

start=$(date +%s)
"$here/rootfs.sh" "$arch" "$cache" || fail "building the VM failed"
echo "vm-service $arch: VM ready in $(( $(date +%s) - start )) s ($cache)"

# ---- the payload disk: the package, the in-VM script, a hub mirror with a small model ----------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
payload=$work/payload
mkdir -p "$payload"
cp "$deb" "$payload/edgeclass.deb"
cp "$here/in-vm.sh" "$payload/run.sh"
# The hub layout fetch-model downloads from ({base}/{repo}/resolve/{revision}/{file}), with the
# small test network in place of the 47 MB ImageNet weights: every frame stays cheap under TCG.
source_field() { grep -oE "^ +$1: \"[^\"]+\"" "$repo/src/model/fetch.rs" | head -n 1 | cut -d'"' -f2; }
hub_path="$(source_field repo)/resolve/$(source_field revision)/$(source_field file)"
[ "$hub_path" != /resolve// ] || fail "no default WeightsSource in src/model/fetch.rs"
model=$repo/tests/fixtures/model_tiny_resnet18.safetensors
install -D -m 644 "$model" "$payload/hub/$hub_path"
cat >"$payload/env" <<ENV
SCENARIOS=$scenarios
MODEL_SHA256=$(sha256sum "$model" | cut -d' ' -f1)
ENV
mkfs.ext4 -q -L payload -d "$payload" "$work/payload.ext4" 64M

# ---- boot: one VM for all scenarios, markers on the serial console ------------------------------
case "$arch" in
  amd64) machine=(-M pc) console=ttyS0 ;;
  arm64) machine=(-M virt -cpu cortex-a72) console=ttyAMA0 ;;
esac
mkdir -p "$(dirname "$log")"
boot=$(date +%s)
# QEMU exits 0 after the VM powers off whatever happened inside: the markers decide.
timeout "${VM_TIMEOUT:-900}" "${QEMU[$arch]}" "${machine[@]}" -smp 2 -m 1024 -nographic \
  -no-reboot -nic none -kernel "$cache/vmlinuz" -initrd "$cache/initrd.cpio" \
  -append "console=$console panic=-1 quiet systemd.show_status=error" \
  -drive "file=$cache/rootfs.ext4,if=virtio,format=raw,snapshot=on" \
  -drive "file=$work/payload.ext4,if=virtio,format=raw,readonly=on" \
  </dev/null 2>&1 | tr -d '\r' >"$log" || true
seconds=$(( $(date +%s) - boot ))

grep -a -E '^(VMTEST|SCENARIO) ' "$log" || true
problems=()
for name in "${EXPECTED[@]}"; do
  grep -a -q "^SCENARIO $name PASS " "$log" || problems+=("$name")
done
grep -a -q '^VMTEST DONE failures=0$' "$log" || problems+=("(no clean VMTEST DONE)")
if [ ${#problems[@]} -gt 0 ]; then
  fail "${problems[*]} did not pass after $seconds s (serial console: $log)"
fi
echo "vm-service $arch: ${#EXPECTED[@]} scenarios ($scenarios) passed; VM ran $seconds s, total $(( $(date +%s) - start )) s"
