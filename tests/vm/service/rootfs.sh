#!/usr/bin/env bash
# Builds (once) the Debian VM that tests/vm/service/run.sh boots: a minimal Debian root
# filesystem of the host's release with systemd as PID 1 and mosquitto, as an ext4 image, the
# stock Debian kernel and a busybox initramfs that mounts it. Run as root (mmdebstrap, mkfs).
#
#   tests/vm/service/rootfs.sh <amd64|arm64> CACHEDIR
#
# Leaves CACHEDIR/{vmlinuz,initrd.cpio,rootfs.ext4}; a later call with the same script and kernel
# does nothing. The VM has no network device; at boot it loads vivid (a virtual V4L2 camera,
# /dev/video0), starts mosquitto on 127.0.0.1:1883 and runs `vm-test.service`: it mounts the
# second disk (/dev/vdb, the payload) and runs its run.sh with output on the serial console, then
# powers off.
set -euo pipefail
if [ $# -ne 2 ] || { [ "$1" != amd64 ] && [ "$1" != arm64 ]; }; then
  sed -n '5,6p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 64
fi
arch=$1
cache=$(mkdir -p "$2" && cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
# Host name of the VM: the Home Assistant discovery topics must carry it.
VM_HOSTNAME=edgeclass-vm
# Camera: vivid and what it needs; disk: virtio block, ext4.
CAMERA_MODULES=(vivid)
BOOT_MODULES=(virtio_pci virtio_mmio virtio_blk crc32c_generic ext4)
# busybox-static: the initramfs's shell and, in the VM, httpd serving the model to fetch-model.
# Nothing for edgeclass itself: its dependencies (libc6, libgcc-s1) are in every Debian, and
# dpkg -i in the VM fails if that ever changes.
PACKAGES=systemd,systemd-sysv,udev,kmod,libnss-systemd,mosquitto,mosquitto-clients,busybox-static

kdir=${EDGECLASS_VM_KERNELS:-/var/cache/edgeclass-ci/kernel}/$arch
version=$("$here/../kernel.sh" "$arch" "$kdir")
stamp="$(sha256sum "$0" | cut -d' ' -f1) $version"
if [ -f "$cache/stamp" ] && [ "$(cat "$cache/stamp")" = "$stamp" ]; then
  exit 0
fi
rm -f "$cache/stamp"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---- root filesystem ---------------------------------------------------------------------------
. /etc/os-release
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null |
  grep -oE 'https?://[^ ]*/debian/?( |$)' | awk '{ print $1; exit }' || true)
root=$work/root
# A foreign root filesystem runs its maintainer scripts under qemu-user: register the static
# emulator with the kernel if nothing did (containers without systemd-binfmt).
if [ "$arch" != "$(dpkg --print-architecture)" ]; then
  binfmt=/proc/sys/fs/binfmt_misc
  qemu_arch=$(case "$arch" in arm64) echo aarch64 ;; *) echo "$arch" ;; esac)
  [ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt"
  [ -e "$binfmt/qemu-$qemu_arch" ] ||
    /lib/systemd/systemd-binfmt "/usr/lib/binfmt.d/qemu-$qemu_arch.conf"
fi
# merged-usr hook: the /usr merge without the usrmerge package (and its perl).
mmdebstrap --quiet --variant=minbase --arch="$arch" --include="$PACKAGES" \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  "$VERSION_CODENAME" "$root" "deb ${mirror%/} $VERSION_CODENAME main" >&2
echo "$VM_HOSTNAME" >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$VM_HOSTNAME" >"$root/etc/hosts"
# A fixed machine id (systemd would otherwise generate one on a read-only-looking first boot).
echo 0123456789abcdef0123456789abcdef >"$root/etc/machine-id"
# Boot fast: no login prompts, no timers, no waiting for a network that is not there.
for unit in getty@.service serial-getty@.service console-getty.service getty.target \
            apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
            fstrim.timer systemd-tmpfiles-clean.timer systemd-networkd-wait-online.service \
            systemd-timesyncd.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
echo '/dev/vda / ext4 rw,noatime 0 1' >"$root/etc/fstab"
# The camera's modules (with their dependencies) from the stock kernel.
# Each module's dependencies first, each file once (--show-depends takes one module at a time).
modules_of() {
  for module in "$@"; do
    modprobe -d "$kdir" -S "$version" --show-depends "$module" | awk '$1 == "insmod" { print $2 }'
  done | awk '!seen[$0]++'
}
for ko in $(modules_of "${CAMERA_MODULES[@]}"); do
  install -D -m 644 "$ko" "$root${ko#"$kdir"}"
done
cp "$kdir/lib/modules/$version"/modules.{order,builtin,builtin.modinfo} \
  "$root/lib/modules/$version/" 2>/dev/null || true
depmod -b "$root" "$version"
printf '%s\n' "${CAMERA_MODULES[@]}" >"$root/etc/modules-load.d/camera.conf"
# The test runner: the payload's run.sh, its output on the serial console, then power off.
cat >"$root/etc/systemd/system/vm-test.service" <<'UNIT'
[Unit]
Description=Run the payload's test script (/dev/vdb) and power off
After=multi-user.target mosquitto.service systemd-modules-load.service
[Service]
Type=oneshot
ExecStartPre=/bin/mkdir -p /payload
ExecStartPre=/bin/mount -o ro /dev/vdb /payload
ExecStart=/bin/sh /payload/run.sh
ExecStopPost=/bin/systemctl --no-block poweroff
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console
TimeoutStartSec=infinity
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/vm-test.service "$root/etc/systemd/system/multi-user.target.wants/"
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/*

# ---- ext4 image --------------------------------------------------------------------------------
size_mb=$(( $(du -sm "$root" | cut -f1) + 200 ))
rm -f "$cache/rootfs.ext4"
mkfs.ext4 -q -L root -d "$root" "$cache/rootfs.ext4" "${size_mb}M"

# ---- initramfs: busybox, the disk's modules, mount and switch_root -----------------------------
initrd=$work/initrd
mkdir -p "$initrd"/{bin,dev,proc,sys,newroot,modules}
cp "$root/bin/busybox" "$initrd/bin/busybox"
for applet in sh mount umount insmod switch_root sleep poweroff; do ln -s busybox "$initrd/bin/$applet"; done
i=0
for ko in $(modules_of "${BOOT_MODULES[@]}"); do
  cp "$ko" "$initrd/modules/$(printf '%02d' $i)-$(basename "$ko")"
  i=$((i + 1))
done
cat >"$initrd/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for ko in /modules/*.ko; do insmod "$ko" 2>/dev/null; done
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  [ -b /dev/vda ] && break
  sleep 0.5
done
mount -t ext4 -o rw /dev/vda /newroot || { echo "initramfs: cannot mount /dev/vda"; poweroff -f; }
mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot /sbin/init
INIT
chmod +x "$initrd/init"
(cd "$initrd" && find . | cpio --quiet -o -H newc) >"$cache/initrd.cpio"
cp "$kdir/vmlinuz" "$cache/vmlinuz"
echo "$stamp" >"$cache/stamp"
du -sh "$cache/rootfs.ext4" "$cache/initrd.cpio" >&2
