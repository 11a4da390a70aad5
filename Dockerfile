# syntax=docker/dockerfile:1
# meltemi's container image: build in a full Debian 12, run in debian:12-slim with only the
# runtime libraries, as the non-root user meltemi (uid/gid 1337, the uid meltemi-iptables
# exempts by default). tools/build-rootfs.sh builds the same image from Debian packages
# without any registry (mmdebstrap + podman import); README.md, "Run as a sidecar", has the
# sizes.
#
#   docker build -t meltemi .                  the sidecar
#   docker build -t meltemi-init --target init .   + iptables, for the init container
#
# Configuration: mount the YAML directory (a ConfigMap) at /etc/meltemi/config; every flag of
# `meltemi run` is also an environment variable (MELTEMI_<FLAG>, `meltemi run --help`).

FROM debian:12-slim AS build
# The build packages of tools/install-deps.sh ("build" part), nothing for the tests.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
      libluajit-5.1-dev libuv1-dev libssl-dev libyaml-dev lua-lpeg-dev libpcre2-dev \
      lua-cjson-dev libxxhash-dev libhttp-parser-dev libnghttp2-dev libprotobuf-c-dev \
      protobuf-c-compiler \
 && rm -rf /var/lib/apt/lists/*
COPY . /src
RUN cmake -S /src -B /build -DCMAKE_BUILD_TYPE=Release -DMELTEMI_TESTS=OFF \
 && cmake --build /build -j"$(nproc)" \
 && DESTDIR=/stage cmake --install /build --prefix /usr --strip

FROM debian:12-slim AS runtime
# The runtime libraries (ldd of the binary; libc6 and libgcc-s1 are in the base). Keep in step
# with RUNTIME_PACKAGES in tools/build-rootfs.sh.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libluajit-5.1-2 libuv1 libssl3 libyaml-0-2 \
      libpcre2-8-0 libnghttp2-14 libprotobuf-c1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1337 meltemi \
 && useradd --uid 1337 --gid 1337 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin meltemi \
 && mkdir -p /etc/meltemi/config
COPY --from=build /stage/usr/ /usr/
ENV MELTEMI_CONFIG=/etc/meltemi/config \
    MELTEMI_ADMIN=0.0.0.0:15000
# 15000 admin (/ready, /stats/prometheus), 15001 outbound capture, 15006 inbound capture
EXPOSE 15000 15001 15006
USER 1337:1337
ENTRYPOINT ["/usr/bin/meltemi"]
CMD ["run"]

# The init container: installs the interception rules (needs NET_ADMIN, runs as root), then
# exits. deploy/kubernetes/ runs `meltemi-iptables --apply ...` in it.
FROM runtime AS init
USER 0:0
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["/usr/bin/meltemi-iptables"]
CMD ["--apply"]

# The default target is the sidecar.
FROM runtime
