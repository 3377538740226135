#!/usr/bin/env bash
# Installs the Debian packages ringnet needs to build, test and benchmark.
# Idempotent: packages already present are not touched, so a second run is quick.
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config clang-format
  libssl-dev libcmocka-dev
  libuv1-dev libmicrohttpd-dev libjansson-dev liblmdb-dev
  libprotobuf-c-dev protobuf-c-compiler libcurl4-openssl-dev
  python3 gnuplot-nox time
  clang libclang-rt-14-dev
  tar xz-utils # `ringnet data fetch` unpacks the AirNow archive (the query tests use it)
)

# the groups asked for: `scripts/deps.sh --test --bench` gives both
bench=false test=false
for a in "$@"; do
  case "$a" in
  --bench) bench=true ;;
  --test) test=true ;;
  *) echo "deps: unknown option '$a' (use --test, --bench)" >&2; exit 2 ;;
  esac
done

# `scripts/deps.sh --bench` adds what the benchmarks measure ringnet against
if $bench; then
  pkgs+=(wrk nginx-light etcd-server etcd-client hyperfine curl)
  pkgs+=(iproute2) # bench/query_netns.sh: network namespaces
  # the cast bench (bench/cast/run): ping, offloads, the BitTorrent baseline
  pkgs+=(iputils-ping ethtool aria2 opentracker)
fi

# `scripts/deps.sh --test` (make test) adds what the tests run beside the node: podman
# with the runc runtime, its network backend and DNS, and docker-compose for
# deploy/compose.yaml (tests/container); chromium for the dashboard's browser test;
# iproute2 (ip, bridge), curl and openssl for the tests that build network namespaces,
# talk HTTPS or make certificates
if $test; then
  pkgs+=(podman runc netavark aardvark-dns iptables docker-compose)
  pkgs+=(docker.io) # tests/container/test_docker.py: the Docker engine (20.10), a private dockerd
  pkgs+=(chromium iproute2 curl openssl)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# docker.io's package starts the system's dockerd, and a dockerd with its default iptables
# rules would stand between the network-namespace tests' bridges; tests/container starts a
# private one of its own. So when this script is what brings docker.io in, under systemd, the
# system's daemon is masked during the install (nothing starts it) and left disabled after.
quiet_docker=false
if [[ " ${missing[*]} " == *" docker.io "* ]] && [ -d /run/systemd/system ]; then
  quiet_docker=true
  $sudo systemctl mask docker.service docker.socket >/dev/null
fi
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if $quiet_docker; then
  $sudo systemctl unmask docker.service docker.socket >/dev/null
  $sudo systemctl disable docker.service docker.socket >/dev/null 2>&1 || true
fi
