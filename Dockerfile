# The ringnet node as a container image: a runtime image FROM scratch holding the binary, the
# shared libraries it loads and nothing else (no shell, no package manager).
#
#   docker build -t ringnet .            # builds the binary in a Debian stage (needs a registry)
#   podman build --format docker --build-arg ROOTFS=host -t ringnet CONTEXT
#   DOCKER_BUILDKIT=1 docker build --build-arg ROOTFS=host -t ringnet CONTEXT
#                                        # no registry: CONTEXT/rootfs is a tree made on the host
#                                        # by deploy/rootfs.sh (what tests/container does);
#                                        # Docker's legacy builder would still pull the base
# podman 4.3 wants --format docker (its default OCI format drops HEALTHCHECK) and, for the
# Debian stage, --build-arg ROOTFS=build (its buildah does not see the default below).
ARG ROOTFS=build
# the build stage's base; a local one works too (README: a Debian base without a registry)
ARG DEBIAN=debian:bookworm-slim

# ---- build stage: Debian, the same packages scripts/deps.sh installs to build ----
FROM ${DEBIAN} AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config libssl-dev libuv1-dev libmicrohttpd-dev \
        libjansson-dev liblmdb-dev libprotobuf-c-dev protobuf-c-compiler \
        libcurl4-openssl-dev binutils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# the whole tree but what .dockerignore names: CMakeLists.txt reaches into cmake/, web/ (the
# dashboard, compiled in) and bench/ too, and a list of directories here fell behind it once
COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    && cmake --build build -j"$(nproc)" --target ringnet \
    && sh deploy/rootfs.sh build/ringnet /rootfs

FROM scratch AS rootfs-build
COPY --from=build /rootfs/system/ /
# the data directory belongs to the user the node runs as
COPY --from=build --chown=10001:10001 /rootfs/user/ /

# ---- or the same tree made on the host, for a machine without a registry ----
FROM scratch AS rootfs-host
COPY rootfs/system/ /
COPY --chown=10001:10001 rootfs/user/ /

# ---- the runtime image ----
FROM rootfs-${ROOTFS}
# configured by RINGNET_ID, RINGNET_LISTEN, RINGNET_HTTP (say node1:7000 and node1:8080 for a
# container named node1), RINGNET_JOIN ...; flags after the image name win over them
ENV RINGNET_DATA=/data
# 7000: the peer port, 8080: the HTTP API
EXPOSE 7000 8080
VOLUME /data
WORKDIR /data
USER 10001:10001
# the binary is its own health check (a scratch image has no curl or shell)
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/ringnet", "health"]
ENTRYPOINT ["/usr/local/bin/ringnet", "node"]
