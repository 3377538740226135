#!/bin/sh
# deploy/rootfs.sh BINARY OUT — the file tree of the runtime image, in two parts:
#   OUT/system  the ringnet binary, exactly the shared libraries it loads (its ldd closure,
#               the ELF interpreter included), a passwd/group naming the unprivileged user it
#               runs as and a resolver config, all root's;
#   OUT/user    an empty data/, for the Dockerfile to COPY --chown to that user (COPY gives
#               root what it copies, and does not change a directory that is already there).
# The Dockerfile's build stage runs it; so does tests/container on the host.
set -eu
[ $# -eq 2 ] || { echo "usage: deploy/rootfs.sh BINARY OUT" >&2; exit 2; }
bin=$1
out=$2
uid=10001
[ -x "$bin" ] || { echo "rootfs.sh: $bin is not an executable" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out/user/data"
user=$out/user
out=$out/system
mkdir -p "$out/usr/local/bin" "$out/etc" "$out/tmp"
cp "$bin" "$out/usr/local/bin/ringnet"
strip "$out/usr/local/bin/ringnet" 2>/dev/null || true
# every library path ldd names ("name => /path (addr)" or "/path (addr)"), resolved
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
	sort -u | while read -r lib; do
	mkdir -p "$out$(dirname "$lib")"
	cp -L "$lib" "$out$lib"
done
[ -n "$(ls "$out"/lib*/ld-linux* 2>/dev/null)" ] || { echo "rootfs.sh: no ELF interpreter found by ldd" >&2; exit 1; }
printf 'root:x:0:0:root:/:/nonexistent\nringnet:x:%s:%s:ringnet:/data:/nonexistent\n' $uid $uid >"$out/etc/passwd"
printf 'root:x:0:\nringnet:x:%s:\n' $uid >"$out/etc/group"
# glibc's own files and dns lookups (built into libc since 2.34): container names resolve
printf 'hosts: files dns\n' >"$out/etc/nsswitch.conf"
chmod 1777 "$out/tmp"
chmod 0750 "$user/data"
