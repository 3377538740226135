#!/usr/bin/env bash
# Builds a fuzz target with clang's libFuzzer and runs it for a bounded time from its seed
# corpus. Usage: run.sh SOURCE_DIR BUILD_DIR [SECONDS] [wire|http]
#   wire: the peer frame decoders (tests/fuzz/fuzz_wire.c)
#   http: a whole node's HTTP request path (tests/fuzz/fuzz_http.c)
#   query: the query service's frame codec (tests/fuzz/fuzz_query.c)
#   ident: the peer identity proof, WIRE_IDENT (tests/fuzz/fuzz_ident.c)
set -euo pipefail
src=$1 build=$2 secs=${3:-20} target=${4:-wire}
out=$build/fuzz
mkdir -p "$out/corpus-$target"
flags=(-std=c17 -g -O1 -fsanitize=fuzzer,address,undefined -D_POSIX_C_SOURCE=200809L
  -DRINGNET_VERSION='"fuzz"' -I"$src/src" -I"$build/proto")
if [ "$target" = wire ]; then
  clang "${flags[@]}" "$src/tests/fuzz/fuzz_wire.c" "$src/src/net/wire.c" "$build/proto/ringnet.pb-c.c" \
    "$src/src/lib/id.c" "$src/src/lib/rng.c" "$src/src/lib/err.c" "$src/src/kv/kv.c" \
    "$src/src/kv/record.c" "$src/src/kv/members.c" "$src/src/kv/near.c" "$src/src/lib/grow.c" -lprotobuf-c -lcrypto -lm \
    -o "$out/fuzz_wire"
  # seeds: a few valid frames, made through python's view of the schema
  python3 - "$out/corpus-wire" <<'PY'
import struct, sys, os, hashlib
def peer(idb, addr):
    return b"\x0a\x14" + idb + b"\x12" + bytes([len(addr)]) + addr
def field(num, wt, payload):
    return bytes([(num << 3) | wt]) + (bytes([len(payload)]) + payload if wt == 2 else payload)
idb = bytes(range(20))
msg = field(1, 0, b"\x01") + field(6, 2, peer(idb, b"127.0.0.1:6001")) + field(8, 2, idb) \
    + field(11, 2, peer(idb, b"127.0.0.1:6002"))
frame = struct.pack(">IB", len(msg) + 1, 1) + msg
open(os.path.join(sys.argv[1], "seed1"), "wb").write(frame)
open(os.path.join(sys.argv[1], "seed2"), "wb").write(frame + frame)
rec = field(1, 2, hashlib.sha1(b"color").digest()) + field(2, 2, b"color") + field(3, 2, b"\"blue\"")
kv = field(1, 0, b"\x01") + field(2, 0, b"\x01") + field(5, 0, b"\x07") + field(6, 2, peer(idb, b"127.0.0.1:6001")) + field(7, 2, rec)
open(os.path.join(sys.argv[1], "seed3"), "wb").write(struct.pack(">IB", len(kv) + 1, 2) + kv)
st = bytes([2]) + struct.pack(">QQ", 18, 4096) + bytes([14]) + b"127.0.0.1:6001"  # a stats tell
open(os.path.join(sys.argv[1], "seed4"), "wb").write(struct.pack(">IB", len(st) + 1, 16) + st)
PY
elif [ "$target" = ident ]; then
  # src/net/cert.c alone; the first run makes a CA, a node certificate and a valid proof,
  # the seed, in the build's fuzz folder
  clang "${flags[@]}" "$src/tests/fuzz/fuzz_ident.c" "$src/src/net/cert.c" -lcrypto \
    -o "$out/fuzz_ident"
  export FUZZ_IDENT_DIR="$out/ident-ca"
  mkdir -p "$FUZZ_IDENT_DIR"
  "$out/fuzz_ident" -runs=0 >/dev/null 2>&1
  cp "$FUZZ_IDENT_DIR/ident.seed" "$out/corpus-ident/"
elif [ "$target" = query ]; then
  # the query frames' codec (src/query/qwire.c); seeds: a heartbeat, a request, an answer
  clang "${flags[@]}" "$src/tests/fuzz/fuzz_query.c" "$src/src/query/qwire.c" -o "$out/fuzz_query"
  python3 - "$out/corpus-query" <<'PY'
import os, struct, sys
hdr = lambda t, req: struct.pack(">BBBQ", t, 0, 1, req)
open(os.path.join(sys.argv[1], "hb"), "wb").write(hdr(3, 0))
req = hdr(1, 7) + struct.pack(">BddiiddddIIQ", 0, 10.0, 50.0, 0, 2**31 - 1, -90.0, 90.0, -180.0, 180.0, 100, 100, 63)
open(os.path.join(sys.argv[1], "req"), "wb").write(req)
rec = struct.pack(">dddiHBBBB", 37.5, -122.25, 12.5, 26000000, 51, 0, 1, 2, 1)
open(os.path.join(sys.argv[1], "resp"), "wb").write(hdr(2, 7) + struct.pack(">BIQII", 0, 1, 0, 3, 1) + rec)
PY
else
  # every library and core the node is made of (not the command line or the simulator)
  mapfile -t srcs < <(find "$src/src" -name '*.c' -not -path '*/cli/*' -not -path '*/sim/*' | sort)
  # shellcheck disable=SC2046
  clang "${flags[@]}" $(pkg-config --cflags libuv libmicrohttpd jansson libprotobuf-c) \
    -I"$src/src/net" "$src/tests/fuzz/fuzz_http.c" "${srcs[@]}" "$build"/proto/*.pb-c.c \
    "$build/web_assets.c" \
    $(pkg-config --libs libuv libmicrohttpd jansson libprotobuf-c) -llmdb -lcrypto -lpthread -lm \
    -o "$out/fuzz_http"
fi
# new inputs go to the build's corpus; tests/fuzz/corpus/TARGET (a long run's, minimised,
# see docs/testing.md) is read as seeds too, so a short run starts where that one ended
"$out/fuzz_$target" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 \
  -timeout=10 "$out/corpus-$target" $( [ -d "$src/tests/fuzz/corpus/$target" ] && echo "$src/tests/fuzz/corpus/$target") 2>&1 | tail -5
