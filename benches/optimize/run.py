"""Time a policy optimization over a logged campaign (docs/optimization.md, "Costs").

Usage: python3 benches/optimize/run.py target/release/tailor 10000 [GRID_JSON]
Starts the binary on a temporary data dir, logs N decisions (10 candidates, rewards from a world
where each of 5 segments has one best item), starts an optimization (default grid, or GRID_JSON)
and polls it; prints the time it took and the top candidates. Run by hand, not by scripts/test.
"""
import json, os, random, subprocess, sys, time, http.client, tempfile, re
BIN = sys.argv[1]; N = int(sys.argv[2]); GRID = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
d = tempfile.mkdtemp()
env = dict(os.environ, TAILOR_ADMIN_KEY="bench-admin-key-0123456789abcdef", RUST_LOG="info", NO_COLOR="1")
p = subprocess.Popen([BIN, "serve", "--bind", "127.0.0.1:0", "--data-dir", d], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
port = None
for line in p.stdout:
    if "listening" in line and "addr=" in line:
        port = int(line.split("addr=")[1].split()[0].rsplit(":", 1)[1]); break
import threading
threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
H = {"authorization": "Bearer bench-admin-key-0123456789abcdef", "content-type": "application/json"}
c = http.client.HTTPConnection("127.0.0.1", port)
def call(method, path, body=None):
    c.request(method, path, json.dumps(body) if body is not None else None, H)
    r = c.getresponse(); return r.status, json.loads(r.read() or b"null")
s, v = call("POST", "/admin/v1/campaigns", {"id": "b", "policy": {"type": "sparse_linucb", "alpha": 2.0}, "exploration": 0.2, "log_requests": True})
assert s == 201, v
rng = random.Random(7)
items = [f"sku-{i}" for i in range(10)]
t0 = time.time(); rewards = []
for i in range(N):
    seg = rng.randrange(5); dev = rng.choice(["mobile", "desktop"])
    body = {"event_id": f"e{i}", "context": {"segment": f"s{seg}", "device": dev, "age": rng.random()},
            "candidates": [{"id": it, "features": {"category": f"c{j%3}", "price": 1 + j}} for j, it in enumerate(items)]}
    s, dd = call("POST", "/v1/campaigns/b/decide", body); assert s == 200, dd
    a = dd["actions"][0]["id"]; k = items.index(a)
    rewards.append({"event_id": f"e{i}", "action_id": a, "value": 1.0 if rng.random() < (0.7 if k == seg else 0.1) else 0.0})
    if len(rewards) == 200:
        s, vv = call("POST", "/v1/rewards", {"rewards": rewards}); assert s == 200, vv; rewards = []
if rewards: call("POST", "/v1/rewards", {"rewards": rewards})
print(f"logged {N} decisions in {time.time()-t0:.1f}s", flush=True)
req = {"optimize": True}
if GRID: req["grid"] = GRID
s, ev = call("POST", "/admin/v1/campaigns/b/evaluations", req); assert s == 201, ev
t1 = time.time()
while True:
    s, e = call("GET", f"/admin/v1/campaigns/b/evaluations/{ev['id']}")
    if e["status"] != "running": break
    time.sleep(0.5)
o = e["optimization"]
print(json.dumps({"status": e["status"], "used": e["used"], "candidates": len(o["candidates"]), "elapsed_ms": o["elapsed_ms"], "wall_s": round(time.time()-t1,1), "truncated": o["truncated"], "winner": o["winner"], "serving": o["serving"]["value"], "memory_bytes": o["memory_bytes"]}))
top = sorted([c for c in o["candidates"] if c.get("value")], key=lambda c: -c["value"]["value"])[:5]
for c_ in top: print(c_["name"], round(c_["value"]["value"],3), round(c_["value"]["low"],3), round(c_["value"]["high"],3), c_["reliable"])
p.terminate()
