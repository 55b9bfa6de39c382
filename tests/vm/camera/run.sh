#!/usr/bin/env bash
# Runs the camera scenarios against the kernel's virtual camera (vivid) in a QEMU VM.
#
#   tests/vm/camera/run.sh <x86_64|aarch64> <edgeclass binary> [scenario...]
#   tests/vm/camera/run.sh <x86_64|aarch64> --prepare     (only download kernel and busybox)
#
# Builds an initramfs from busybox-static, vivid and its modules from the Debian kernel
# (tests/vm/kernel.sh), vivid-ctl (tests/vm/camera/vivid-ctl.c, built static), the edgeclass
# binary with the libraries it links (readelf) and the tiny reference network; boots it ONCE
# (TCG, no network) and runs the scenarios in order inside it (tests/vm/camera/init.sh), then
# checks the `SCENARIO <name> PASS|FAIL` lines on the serial console.
# Scenarios (default: all for x86_64; stream, disconnect, top3 for aarch64):
#   list stream mjpeg-fallback top3 disconnect unbind errors stall
# Environment:
#   EDGECLASS_VM_KERNELS where kernels and busybox are kept, per Debian architecture
#                        [/var/cache/edgeclass-ci/kernel]
#   EDGECLASS_VM_LOG     the console log [target/vm-camera-<arch>.log]
#   EDGECLASS_VM_TOP3    a file with an expected `TOP3 ...` line (e.g. the x86_64 run's): the
#                        top3 scenario must print the same one
# Exit status: 0 if every scenario passed, 1 otherwise; a summary line is printed last.
# Needs (installed by .ci/setup): qemu-system-x86 / qemu-system-arm, cpio, kmod,
# gcc / gcc-aarch64-linux-gnu with libc6-dev-arm64-cross.
set -euo pipefail
usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 64; }
[ $# -ge 2 ] || usage
arch=$1 binary=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
kernels=${EDGECLASS_VM_KERNELS:-/var/cache/edgeclass-ci/kernel}
log=${EDGECLASS_VM_LOG:-$repo/target/vm-camera-$arch.log}
need() { command -v "$1" >/dev/null || { echo "run.sh: $1 missing: run .ci/setup ($2)" >&2; exit 69; }; }

case "$arch" in
  x86_64)
    debarch=amd64 cc=gcc libdirs=(/lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib64)
    qemu=(qemu-system-x86_64 -m 768) console=ttyS0
    default_scenarios=(list stream mjpeg-fallback top3 disconnect unbind errors stall)
    need qemu-system-x86_64 qemu-system-x86 ;;
  aarch64)
    debarch=arm64 cc=aarch64-linux-gnu-gcc libdirs=(/usr/aarch64-linux-gnu/lib /usr/aarch64-linux-gnu/lib64)
    qemu=(qemu-system-aarch64 -M virt -cpu cortex-a72 -m 768) console=ttyAMA0
    default_scenarios=(stream disconnect top3)
    need qemu-system-aarch64 qemu-system-arm ;;
  *) usage ;;
esac

# Kernel, modules and the architecture's static busybox (tests/vm/kernel.sh), downloaded once.
kernel=$kernels/$debarch
version=$("$repo/tests/vm/kernel.sh" "$debarch" "$kernel" | tail -n 1)
busybox=$kernel/busybox
[ "$binary" = --prepare ] && { echo "run.sh: $arch kernel $version and busybox ready in $kernel"; exit 0; }

need "$cc" "the C compiler for $arch"
need cpio cpio
need readelf binutils
[ -x "$binary" ] || { echo "run.sh: $binary is not an executable" >&2; exit 66; }
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=("${default_scenarios[@]}")

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,edgeclass,proc,sys,dev,tmp,lib,lib64}

# vivid and the modules modules.dep says it needs.
moddir=lib/modules/$version
mkdir -p "$root/$moddir"
cp "$kernel/$moddir"/modules.{dep,alias,symbols,builtin,order} "$root/$moddir/" 2>/dev/null || true
cp "$kernel/$moddir/modules.dep" "$root/$moddir/"
vivid_line=$(grep -E '(^|/)vivid\.ko:' "$kernel/$moddir/modules.dep") ||
  { echo "run.sh: no vivid.ko in $kernel/$moddir/modules.dep" >&2; exit 70; }
for module in ${vivid_line/:/}; do
  mkdir -p "$root/$moddir/$(dirname "$module")"
  cp "$kernel/$moddir/$module" "$root/$moddir/$module"
done

cp "$busybox" "$root/bin/busybox"
for applet in sh mount ip modprobe insmod sleep cat grep sed awk tr head tail wc echo kill \
              ls poweroff uname date mkdir rm cp; do
  ln -s busybox "$root/bin/$applet"
done

"$cc" -static -O2 -Wall -Wextra -Werror -o "$root/edgeclass/vivid-ctl" "$here/vivid-ctl.c"
cp "$binary" "$root/edgeclass/edgeclass"
cp "$repo/tests/fixtures/model_tiny_resnet18.safetensors" "$root/edgeclass/model.safetensors"

# The binary's libraries, resolved from its DT_NEEDED entries (works for cross-built binaries,
# where ldd does not), and its program interpreter.
interp=$(readelf -l "$binary" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
copy_lib() { # PATH-IN-VM HOST-FILE
  [ -e "$root$1" ] && return 1
  mkdir -p "$root$(dirname "$1")"
  cp -L "$2" "$root$1"
}
if [ -n "$interp" ]; then
  found=""
  for dir in "${libdirs[@]}" "$(dirname "$interp")"; do
    [ -e "$dir/$(basename "$interp")" ] && { found=$dir/$(basename "$interp"); break; }
  done
  [ -n "$found" ] || { echo "run.sh: interpreter $interp not found in ${libdirs[*]}" >&2; exit 69; }
  copy_lib "$interp" "$found" || true
fi
pending=("$binary")
while [ ${#pending[@]} -gt 0 ]; do
  elf=${pending[0]}
  pending=("${pending[@]:1}")
  for lib in $(readelf -d "$elf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    host=""
    for dir in "${libdirs[@]}"; do [ -e "$dir/$lib" ] && { host=$dir/$lib; break; }; done
    [ -n "$host" ] || { echo "run.sh: $lib (needed by $elf) not found in ${libdirs[*]}" >&2; exit 69; }
    if copy_lib "/lib/$lib" "$host"; then pending+=("$host"); fi
  done
done

cp "$here/init.sh" "$root/init"
chmod +x "$root/init"
initrd=$root.cpio.gz
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd"
trap 'rm -rf "$root" "$initrd"' EXIT

mkdir -p "$(dirname "$log")"
echo "run.sh: booting $arch ($version) for: ${scenarios[*]}; console -> $log" >&2
start=$(date +%s)
# Generous: the scenarios bound their own waits; this only stops a hung VM.
status=0
timeout 900 "${qemu[@]}" -smp 2 -nographic -nic none -no-reboot -kernel "$kernel/vmlinuz" \
  -initrd "$initrd" \
  -append "console=$console panic=-1 quiet scenarios=$(IFS=,; echo "${scenarios[*]}")" \
  </dev/null | tr -d '\r' | tee "$log" | grep --line-buffered -E '^(SCENARIO|VM|TOP3|  )' || status=$?
took=$(($(date +%s) - start))

failed=0 passed=0
for s in "${scenarios[@]}"; do
  if grep -q "^SCENARIO $s\(-[a-z0-9]*\)\? FAIL" "$log" || ! grep -q "^SCENARIO $s\(-[a-z0-9]*\)\? PASS" "$log"; then
    failed=$((failed + 1))
    echo "run.sh: scenario $s: FAILED or missing" >&2
  else
    passed=$((passed + 1))
  fi
done
grep -q '^VM DONE' "$log" || { echo "run.sh: the VM did not finish (status $status)" >&2; failed=$((failed + 1)); }
if [ -n "${EDGECLASS_VM_TOP3:-}" ] && [[ " ${scenarios[*]} " == *" top3 "* ]]; then
  expected=$(grep -m1 '^TOP3 ' "$EDGECLASS_VM_TOP3" || true)
  actual=$(grep -m1 '^TOP3 ' "$log" || true)
  if [ -n "$expected" ] && [ "$expected" = "$actual" ]; then
    echo "run.sh: Top-3 equals $EDGECLASS_VM_TOP3's: $actual"
  else
    echo "run.sh: Top-3 [$actual] differs from $EDGECLASS_VM_TOP3's [$expected]" >&2
    failed=$((failed + 1))
  fi
fi
echo "camera VM $arch: $passed of ${#scenarios[@]} scenarios passed, $failed failures, ${took} s (log: $log)"
[ $failed -eq 0 ]
