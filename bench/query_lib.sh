# query_lib.sh — what the query benchmarks share (sourced): the release binary built if
# missing, the data set unpacked if missing. Sets repo and bin; cds to the repository.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$repo/build/ringnet
cd "$repo"
[ -x "$bin" ] || { cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null && cmake --build build -j2 >/dev/null; }
[ -d data/2020-fire/data ] || "$bin" data fetch --config configs/one_host.json
