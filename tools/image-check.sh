#!/usr/bin/env bash
# image-check.sh - CI's check of the container image, built without a registry: the root
# filesystem of tools/build-rootfs.sh (imported with podman when podman is installed), then
# the Redis walk-through (examples/redis-demo/run.sh --check) with the image's meltemi run
# as its container would be: `podman run` where it works, else chrooted into the root
# filesystem in new mount and PID namespaces as the image's user (tools/rootfs-run). On these
# machines `podman run` fails (crun: setrlimit ... Operation not permitted): the script says
# so and the chroot run is the check.
#
#   tools/image-check.sh [BUILD_DIR]      (default build; must be built)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
out=build-rootfs
image=localhost/meltemi:ci

import=()
if command -v podman >/dev/null; then
    podman rmi -f "$image" >/dev/null 2>&1 || true
    import=(--import "$image")
else
    echo "image-check: podman not installed: root filesystem only (no podman import)"
fi
tools/build-rootfs.sh --build-dir "$build_dir" --out "$out" "${import[@]}"
rootfs=$PWD/$out/rootfs

# The image's user and what its meltemi needs: nothing but itself and its libraries.
grep -q '^meltemi:x:1337:1337:' "$rootfs/etc/passwd"
MELTEMI_ROOTFS=$rootfs tools/rootfs-run --version

if [[ ${#import[@]} -gt 0 ]]; then
    if out_run=$(timeout 60 podman run --rm --network host "$image" --version 2>&1); then
        echo "image-check: podman run: $out_run"
    else
        echo "image-check: podman run does not work on this machine, the chroot below stands in:"
        echo "  $out_run" | head -3
    fi
fi

echo "image-check: the Redis walk-through with the image's meltemi (chroot, user 1337)"
MELTEMI_ROOTFS=$rootfs MELTEMI_BIN=$PWD/tools/rootfs-run examples/redis-demo/run.sh --check

if [[ ${#import[@]} -gt 0 ]]; then
    podman rmi -f "$image" >/dev/null 2>&1 || true
fi
rm -rf "$out"
