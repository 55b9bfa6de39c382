#!/usr/bin/env bash
# Fetches the host Debian release's stock kernel and static busybox for a test VM (run as root or
# not; offline after the first run: the download is kept in OUTDIR).
#
#   tests/vm/kernel.sh <amd64|arm64> OUTDIR
#
# Leaves OUTDIR/vmlinuz, OUTDIR/lib/modules/VERSION/ (with modules.dep, from depmod -b) and
# OUTDIR/busybox (busybox-static of ARCH, the initramfs's userland), and prints VERSION. The package index of ARCH is read into OUTDIR/apt (a private apt state), so the
# host's apt configuration and its list of architectures stay untouched.
set -euo pipefail
if [ $# -ne 2 ] || { [ "$1" != amd64 ] && [ "$1" != arm64 ]; }; then
  sed -n '4,5p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 64
fi
arch=$1
out=$(mkdir -p "$2" && cd "$2" && pwd)

if [ -f "$out/version" ] && [ -f "$out/vmlinuz" ] && [ -x "$out/busybox" ]; then
  version=$(cat "$out/version")
  if [ -f "$out/lib/modules/$version/modules.dep" ]; then
    echo "$version"
    exit 0
  fi
fi

# The host's Debian mirror and release (deb822 or one-line sources).
. /etc/os-release
codename=${VERSION_CODENAME:?/etc/os-release has no VERSION_CODENAME}
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null |
  grep -oE 'https?://[^ ]*/debian/?( |$)' | awk '{ print $1; exit }' || true)
mirror=${mirror%/}
[ -n "$mirror" ] || { echo "kernel.sh: no Debian mirror in /etc/apt/sources.list*" >&2; exit 1; }

apt_dir=$out/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/etc/preferences.d" \
         "$apt_dir/etc/sources.list.d"
echo "deb [arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $codename main" >"$apt_dir/etc/sources.list"
echo "deb [arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror%/debian*}/debian-security $codename-security main" \
  >>"$apt_dir/etc/sources.list"
apt_opts=(-o "APT::Sandbox::User=root" -o "Dir::Etc=$apt_dir/etc" -o "Dir::State::Lists=$apt_dir/lists"
          -o "Dir::Cache=$apt_dir" -o "Dir::State::status=/dev/null"
          -o "APT::Architecture=$arch" -o "APT::Architectures=$arch" -o "Debug::NoLocking=1")
apt-get "${apt_opts[@]}" -qq update >&2
# linux-image-ARCH is a metapackage: its dependency is the kernel itself.
image=$(apt-cache "${apt_opts[@]}" depends "linux-image-$arch" |
  awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
[ -n "$image" ] || { echo "kernel.sh: linux-image-$arch has no versioned kernel dependency" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get "${apt_opts[@]}" -qq download "$image:$arch" "busybox-static:$arch" >&2)
rm -rf "${out:?}/lib"
dpkg-deb -x "$work"/busybox-static_*.deb "$work/busybox"
cp "$work/busybox/bin/busybox" "$out/busybox"
dpkg-deb -x "$work"/linux-image-*.deb "$work/root"
version=${image#linux-image-}
mv "$work/root/boot/vmlinuz-$version" "$out/vmlinuz"
mkdir -p "$out/lib/modules"
mv "$work/root/lib/modules/$version" "$out/lib/modules/"
depmod -b "$out" "$version"
echo "$version" >"$out/version"
echo "$version"
