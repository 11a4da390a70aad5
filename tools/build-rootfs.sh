#!/usr/bin/env bash
# build-rootfs.sh - the container image of the Dockerfile, built without any container
# registry: a Debian 12 root filesystem made by mmdebstrap from Debian's packages (only
# meltemi's runtime libraries on top of the Essential set), meltemi installed into it by the
# staged install (cmake --install --strip), a non-root user meltemi (uid/gid 1337, the uid
# meltemi-iptables exempts by default), and optionally imported as an image with podman.
#
#   tools/build-rootfs.sh [--build-dir build] [--out build-rootfs] [--init] [--import NAME]
#
#   --build-dir DIR   a configured and built CMake directory (default: build)
#   --out DIR         where the root filesystem goes (DIR/rootfs, replaced) and its tarball
#                     (DIR/meltemi-rootfs.tar) (default: build-rootfs)
#   --init            also install iptables: the image of the Kubernetes init container that
#                     runs `meltemi-iptables --apply` (the Dockerfile's `init` target)
#   --import NAME     `podman import` the tarball as image NAME (needs podman)
#
# Prints the sizes at the end. Run a command inside with tools/rootfs-run (what CI does: on
# these machines `podman run` fails on setrlimit, a chroot in new mount and PID namespaces
# does not). Needs root (mmdebstrap --mode=root) or mmdebstrap's unshare mode.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=build
out=build-rootfs
init=0
import_name=
while [[ $# -gt 0 ]]; do
    case "$1" in
    --build-dir) build_dir=$2; shift ;;
    --out) out=$2; shift ;;
    --init) init=1 ;;
    --import) import_name=$2; shift ;;
    -h | --help)
        sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "build-rootfs: unknown option '$1' (see --help)" >&2
        exit 2
        ;;
    esac
    shift
done

# The runtime libraries of the binary (ldd of a build: libc6 and libgcc-s1 are Essential).
# Keep in step with the Dockerfile's final stage.
RUNTIME_PACKAGES=libluajit-5.1-2,libuv1,libssl3,libyaml-0-2,libpcre2-8-0,libnghttp2-14,libprotobuf-c1
[[ $init -eq 1 ]] && RUNTIME_PACKAGES+=,iptables

for tool in mmdebstrap cmake tar; do
    command -v "$tool" >/dev/null || {
        echo "build-rootfs: $tool not found (Debian package: $tool; tools/install-deps.sh)" >&2
        exit 1
    }
done
[[ -x "$build_dir/meltemi" ]] || {
    echo "build-rootfs: $build_dir/meltemi not found: build first (make build)" >&2
    exit 1
}
mode=root
[[ $(id -u) -eq 0 ]] || mode=unshare

mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$out/stage
rootfs=$out/rootfs
rm -rf "$stage" "$rootfs"
DESTDIR=$stage cmake --install "$build_dir" --prefix /usr --strip >/dev/null

t0=$SECONDS
# Documentation, man pages and locales of the Debian packages are left out (copyright files
# are kept); meltemi's own docs and examples come with its install.
mmdebstrap --variant=essential --mode="$mode" --include="$RUNTIME_PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook="tar -C '$stage' -c . | tar -C \"\$1\" -x --no-same-owner" \
    --customize-hook='echo "meltemi:x:1337:1337:meltemi sidecar:/nonexistent:/usr/sbin/nologin" >>"$1/etc/passwd"' \
    --customize-hook='echo "meltemi:x:1337:" >>"$1/etc/group"' \
    --customize-hook='mkdir -p "$1/etc/meltemi/config"' \
    --customize-hook='rm -rf "$1/var/cache/apt" "$1/var/lib/apt/lists"' \
    bookworm "$rootfs" >"$out/mmdebstrap.log" 2>&1 || {
    tail -30 "$out/mmdebstrap.log" >&2
    echo "build-rootfs: mmdebstrap failed (log: $out/mmdebstrap.log)" >&2
    exit 1
}
tar -C "$rootfs" --numeric-owner -cf "$out/meltemi-rootfs.tar" .
echo "build-rootfs: $rootfs in $((SECONDS - t0)) s: $(du -sh "$rootfs" | cut -f1) on disk," \
    "tarball $(du -h "$out/meltemi-rootfs.tar" | cut -f1); meltemi's own files $(du -sh "$stage" | cut -f1)"

if [[ -n "$import_name" ]]; then
    command -v podman >/dev/null || {
        echo "build-rootfs: --import needs podman (Debian package podman)" >&2
        exit 1
    }
    # The image's configuration: what the Dockerfile's final stage says.
    podman import \
        --change 'USER 1337:1337' \
        --change 'WORKDIR /' \
        --change 'ENV MELTEMI_CONFIG=/etc/meltemi/config' \
        --change 'ENV MELTEMI_ADMIN=0.0.0.0:15000' \
        --change 'EXPOSE 15000' --change 'EXPOSE 15001' --change 'EXPOSE 15006' \
        --change 'ENTRYPOINT ["/usr/bin/meltemi"]' \
        --change 'CMD ["run"]' \
        "$out/meltemi-rootfs.tar" "$import_name"
    podman image inspect --format '{{.Size}}' "$import_name" |
        awk -v n="$import_name" '{ printf "build-rootfs: image %s imported, %.1f MB\n", n, $1 / 1e6 }'
fi
