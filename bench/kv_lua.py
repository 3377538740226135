#!/usr/bin/env python3
"""Writes the wrk scripts of bench/kv_http.sh into the directory given: 100 keys, random
order, for ringnet's API and etcd's v3 JSON gateway (keys and values base64 there)."""
import base64
import sys

tmp = sys.argv[1]
b64 = lambda s: base64.b64encode(s.encode()).decode()
keys = [f"k{i}" for i in range(100)]


def script(name, path, bodies):
    lines = ["math.randomseed(11)", 'wrk.method = "POST"',
             'wrk.headers["Content-Type"] = "application/json"', "bodies = {"]
    lines += ["  '" + x + "'," for x in bodies]
    lines += ["}", f"request = function() return wrk.format(nil, '{path}', nil, bodies[math.random(#bodies)]) end"]
    with open(f"{tmp}/{name}.lua", "w") as f:
        f.write("\n".join(lines) + "\n")


script("etcd_put", "/v3/kv/put", [f'{{"key":"{b64(k)}","value":"{b64("value-" + k)}"}}' for k in keys])
script("etcd_get", "/v3/kv/range", [f'{{"key":"{b64(k)}"}}' for k in keys])
script("rn_put", "/kv", [f'{{"key":"{k}","value":"value-{k}"}}' for k in keys])
with open(f"{tmp}/rn_get.lua", "w") as f:
    f.write("math.randomseed(11)\nrequest = function() return wrk.format('GET', '/kv/k' .. math.random(0, 99)) end\n")
