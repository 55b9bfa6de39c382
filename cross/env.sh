# shellcheck shell=bash
# Cross-compilation environment for edgeclass, sourced by cross/build.sh and cross/test.sh.
#
# Builds use the rustup target plus Debian's cross toolchains (no docker):
#   gcc-aarch64-linux-gnu libc6-dev-arm64-cross        (aarch64: Pi 3/4/5 running 64-bit Pi OS)
#   gcc-arm-linux-gnueabihf libc6-dev-armhf-cross      (armv7: 32-bit Pi OS on Pi 2 v1.1 and later)
#   libclang-dev clang                                  (bindgen for the v4l crate's V4L2 bindings)
#   qemu-user-static                                    (cross/test.sh runs the test binaries)
# libc6-dev-*-cross pulls in linux-libc-dev-*-cross, whose linux/videodev2.h is the header
# v4l2-sys-mit runs bindgen on; pointing clang at the cross sysroot makes the bindings match the
# target's struct layouts (32-bit armhf differs from the host's).

# cross_env TARGET [QEMU_CPU]: exports the linker, C compiler, archiver, bindgen and rustc flags
# for TARGET, and a qemu runner emulating QEMU_CPU (or the target's default) for `cargo test/run`.
cross_env() {
  local target=$1 qemu_cpu=${2:-}
  local gnu qemu default_cpu rustflags=""
  case "$target" in
    aarch64-unknown-linux-gnu)
      gnu=aarch64-linux-gnu qemu=qemu-aarch64-static default_cpu=cortex-a72
      # NEON is part of the aarch64 baseline; the int8 kernels detect dot-product (Pi 5's
      # Cortex-A76) at run time, so no target-cpu flag: one binary serves Pi 3, 4 and 5.
      ;;
    armv7-unknown-linux-gnueabihf)
      gnu=arm-linux-gnueabihf qemu=qemu-arm-static default_cpu=cortex-a7
      # Every CPU that runs armv7 hard-float Pi OS (Cortex-A7 in the Pi 2, A53/A72/A76 in
      # 32-bit mode) has NEON with 32 double registers; Rust's armv7 target turns it off, and
      # without it LLVM vectorizes no integer loop (measured: an i8 dot product compiles to
      # 48 NEON instructions with +neon, none without). `-C target-cpu=cortex-a7` does not turn
      # it back on. rustc warns once per crate that `neon` is an unstable target feature on
      # 32-bit ARM: expected, the code generation is what we want.
      rustflags="-C target-feature=+neon"
      ;;
    x86_64-unknown-linux-gnu)
      gnu="" qemu="" default_cpu=""
      ;;
    *)
      echo "cross/env.sh: unsupported target '$target'" >&2
      echo "  supported: aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf x86_64-unknown-linux-gnu" >&2
      return 64
      ;;
  esac

  local upper=${target^^}; upper=${upper//-/_}   # CARGO_TARGET_<TRIPLE>_* spelling
  local lower=${target//-/_}                     # cc/bindgen's <target> spelling

  # A here-string: piped into `grep -q`, a SIGPIPE'd rustup would fail the test under pipefail.
  if ! grep -qx "$target" <<<"$(rustup target list --installed 2>/dev/null)"; then
    echo "cross/env.sh: rust target $target is not installed: rustup target add $target" >&2
    return 69
  fi

  if [ -n "$gnu" ]; then
    local tool
    for tool in "$gnu-gcc" "$gnu-ar" "$qemu"; do
      command -v "$tool" >/dev/null || {
        echo "cross/env.sh: $tool not found (see the package list at the top of cross/env.sh)" >&2
        return 69
      }
    done
    [ -f "/usr/$gnu/include/linux/videodev2.h" ] || {
      echo "cross/env.sh: /usr/$gnu/include/linux/videodev2.h missing (linux-libc-dev for $gnu)" >&2
      return 69
    }
    export "CARGO_TARGET_${upper}_LINKER=$gnu-gcc"
    export "CC_${lower}=$gnu-gcc" "CXX_${lower}=$gnu-g++" "AR_${lower}=$gnu-ar"
    export "BINDGEN_EXTRA_CLANG_ARGS_${lower}=--sysroot=/usr/$gnu -I/usr/$gnu/include"
    # pkg-config must not hand host libraries to a cross link.
    export "PKG_CONFIG_SYSROOT_DIR_${lower}=/usr/$gnu"
    export "PKG_CONFIG_PATH_${lower}=/usr/lib/$gnu/pkgconfig"
    export "CARGO_TARGET_${upper}_RUNNER=$qemu -cpu ${qemu_cpu:-$default_cpu} -L /usr/$gnu"
  fi
  if [ -n "$rustflags" ]; then
    export "CARGO_TARGET_${upper}_RUSTFLAGS=$rustflags"
  fi
  CROSS_TARGET_DESCRIPTION="$target${gnu:+ (gcc $gnu, qemu ${qemu_cpu:-$default_cpu})}"
  export CROSS_TARGET_DESCRIPTION
}
