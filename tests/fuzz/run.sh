#!/usr/bin/env bash
# Builds the frame-decoder fuzzer with clang's libFuzzer and runs it for a bounded time
# from a seed corpus of valid frames. Usage: run.sh SOURCE_DIR BUILD_DIR [SECONDS]
set -euo pipefail
src=$1 build=$2 secs=${3:-20}
out=$build/fuzz
mkdir -p "$out/corpus"
clang -std=c17 -g -O1 -fsanitize=fuzzer,address,undefined -D_POSIX_C_SOURCE=200809L \
  -I"$src/src" -I"$build/proto" \
  "$src/tests/fuzz/fuzz_wire.c" "$src/src/net/wire.c" "$build/proto/ringnet.pb-c.c" \
  "$src/src/lib/id.c" "$src/src/lib/rng.c" "$src/src/lib/err.c" "$src/src/kv/kv.c" "$src/src/kv/record.c" "$src/src/lib/grow.c" \
  -lprotobuf-c -lcrypto -lm -o "$out/fuzz_wire"
# seeds: a few valid frames, made by the encoder itself through python's view of the schema
python3 - "$out/corpus" <<'PY'
import struct, sys, os
def peer(idb, addr):
    body = b"\x0a\x14" + idb + b"\x12" + bytes([len(addr)]) + addr
    return body
def field(num, wt, payload):
    return bytes([(num << 3) | wt]) + (bytes([len(payload)]) + payload if wt == 2 else payload)
idb = bytes(range(20))
msg = field(1, 0, b"\x01") + field(6, 2, peer(idb, b"127.0.0.1:6001")) + field(8, 2, idb) \
    + field(11, 2, peer(idb, b"127.0.0.1:6002"))
frame = struct.pack(">IB", len(msg) + 1, 1) + msg
open(os.path.join(sys.argv[1], "seed1"), "wb").write(frame)
open(os.path.join(sys.argv[1], "seed2"), "wb").write(frame + frame)
import hashlib
rec = field(1, 2, hashlib.sha1(b"color").digest()) + field(2, 2, b"color") + field(3, 2, b"\"blue\"")
kv = field(1, 0, b"\x01") + field(2, 0, b"\x01") + field(5, 0, b"\x07") + field(6, 2, peer(idb, b"127.0.0.1:6001")) + field(7, 2, rec)
open(os.path.join(sys.argv[1], "seed3"), "wb").write(struct.pack(">IB", len(kv) + 1, 2) + kv)
PY
# new inputs go to the build's corpus; tests/fuzz/corpus/wire (the long run's, minimised,
# see docs/testing.md) is read as seeds too, so the short run starts where that one ended
"$out/fuzz_wire" -max_total_time="$secs" -rss_limit_mb=1024 -print_final_stats=1 "$out/corpus" \
  "$src/tests/fuzz/corpus/wire" 2>&1 | tail -5
