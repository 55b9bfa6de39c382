#!/usr/bin/env bash
# Cross-builds edgeclass for a Raspberry Pi (or x86_64) without docker.
#
#   cross/build.sh TARGET [--release | --profile NAME] [cargo build args...]
#
# TARGET: aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf | x86_64-unknown-linux-gnu
# The binary lands in target/TARGET/<profile>/edgeclass; its path is printed last.
# Example: cross/build.sh aarch64-unknown-linux-gnu --release
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cross/env.sh
. "$here/env.sh"

if [ $# -lt 1 ] || [ "${1:0:1}" = "-" ]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 64
fi
target=$1; shift
cross_env "$target"

profile_dir=debug
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --release | -r) profile_dir=release ;;
    --profile) profile_dir=${args[i + 1]:-debug} ;;
    --profile=*) profile_dir=${args[i]#--profile=} ;;
  esac
done
[ "$profile_dir" = dev ] && profile_dir=debug

cd "$here/.."
echo "cross/build.sh: building for $CROSS_TARGET_DESCRIPTION" >&2
cargo build --locked --target "$target" --bin edgeclass "$@"
echo "$PWD/target/$target/$profile_dir/edgeclass"
