#!/usr/bin/env bash
# Runs edgeclass's tests for TARGET under qemu user-mode emulation.
#
#   cross/test.sh TARGET [--cpu QEMU_CPU] [cargo test args...]
#
# QEMU_CPU picks the emulated core, e.g. cortex-a72 (Pi 4) or cortex-a76 (Pi 5, has dot-product)
# for aarch64, cortex-a7 (Pi 2) for armv7; `qemu-aarch64-static -cpu help` lists them.
# Examples:
#   cross/test.sh aarch64-unknown-linux-gnu --cpu cortex-a76 --release --lib
#   cross/test.sh armv7-unknown-linux-gnueabihf --release --lib
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cross/env.sh
. "$here/env.sh"

if [ $# -lt 1 ] || [ "${1:0:1}" = "-" ]; then
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 64
fi
target=$1; shift
cpu=""
if [ "${1:-}" = "--cpu" ]; then
  cpu=${2:?--cpu needs a value}; shift 2
fi
cross_env "$target" "$cpu"

cd "$here/.."
echo "cross/test.sh: testing $CROSS_TARGET_DESCRIPTION" >&2
cargo test --locked --target "$target" "$@"
