#!/usr/bin/env bash
# Fetches the Debian kernel for a VM under QEMU, without installing anything on the host.
#
#   tests/vm/kernel.sh <amd64|arm64> <outdir>
#
# Downloads linux-image-<arch> of the host's Debian release (apt-get download, a foreign
# architecture is added to dpkg when needed), unpacks it with dpkg-deb -x and runs depmod -b, so
# <outdir>/vmlinuz and <outdir>/lib/modules/<version>/ (with modules.dep) are ready for an
# initramfs. Prints the kernel version last. Idempotent: an <outdir> already holding a kernel is
# reused. Needs apt-get, dpkg-deb and depmod (kmod); .ci/setup installs them.
set -euo pipefail
usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 64; }
[ $# -eq 2 ] || usage
arch=$1 out=$2
case "$arch" in amd64 | arm64) ;; *) usage ;; esac
command -v depmod >/dev/null || { echo "kernel.sh: depmod missing (package kmod; run .ci/setup)" >&2; exit 69; }

if [ -f "$out/vmlinuz" ] && [ -f "$out/version" ] &&
   [ -f "$out/lib/modules/$(cat "$out/version")/modules.dep" ]; then
  cat "$out/version"
  exit 0
fi

if [ "$arch" != "$(dpkg --print-architecture)" ] &&
   ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
  # Only lets apt know about the architecture's package lists; nothing of it gets installed.
  dpkg --add-architecture "$arch"
  apt-get update -qq
fi

# Never delete what this script did not write: an <outdir> without its version file must be empty.
if [ -e "$out" ] && [ ! -f "$out/version" ] && [ -n "$(ls -A "$out")" ]; then
  echo "kernel.sh: $out exists and is not a kernel directory written by this script" >&2
  exit 73
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The meta package depends on the versioned image package (linux-image-6.1.0-NN-<flavour>).
meta=linux-image-$arch
versioned_image() {
  apt-cache show --no-all-versions "$meta:$arch" 2>/dev/null |
    sed -n 's/^Depends: \(linux-image-[0-9][^ ,]*\).*/\1/p' | head -n 1
}
image=$(versioned_image)
[ -n "$image" ] || { apt-get update -qq; image=$(versioned_image); }
[ -n "$image" ] || { echo "kernel.sh: cannot resolve $meta to a versioned image package" >&2; exit 69; }
# _apt cannot write into a root-owned mktemp directory; let it.
chmod 755 "$work" && chown _apt "$work" 2>/dev/null || true
(cd "$work" && apt-get download -qq "$image:$arch" >&2)
deb=$(ls "$work"/*.deb)
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
dpkg-deb -x "$deb" "$out.tmp/root"
version=$(ls "$out.tmp/root/lib/modules")
[ "$(wc -w <<<"$version")" = 1 ] || { echo "kernel.sh: expected one module tree in $deb, got: $version" >&2; exit 70; }
mv "$out.tmp/root/boot/vmlinuz-$version" "$out.tmp/vmlinuz"
mkdir -p "$out.tmp/lib/modules"
mv "$out.tmp/root/lib/modules/$version" "$out.tmp/lib/modules/"
rm -rf "$out.tmp/root"
depmod -b "$out.tmp" "$version"
echo "$version" >"$out.tmp/version"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$version"
