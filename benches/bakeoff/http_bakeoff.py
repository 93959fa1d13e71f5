"""The HTTP bake-off (issue 20, docs/learning.md): Tailor over its real API against Vowpal Wabbit.

Supervised-to-bandit streams: each example is one decision, its context the example's numeric
features, its candidates the classes (each with a categorical `class` feature), the reward 1 when
the chosen class is the label, else 0. Tailor plays each stream through a release `tailor serve`
(loopback, temporary data directory): `POST /v1/campaigns/{id}/decide`, then
`POST /v1/campaigns/{id}/events/{event}/reward` with 0 or 1, one example at a time, on campaigns
created with defaults only (`{"id", "kind": "items"}`) and, for comparison, `linucb` α 1 at
dimension 64 (the pre-issue-20 setting). Vowpal Wabbit plays the very same examples in process with
`--cb_explore_adf -q CA` (epsilon 0.05, squarecb, greedy). Score: progressive reward (mean reward
over the whole stream, learning included), mean ± sd over seeds; and decisions/s (Tailor: one
decide and one reward round trip per decision, sequential, one connection).

Streams: scikit-learn `make_classification` of several shapes and the datasets sklearn ships
(digits, wine, iris: standardized, played in a seeded shuffled order, repeated to --examples).

Run by hand (not part of scripts/test): `benches/bakeoff/run`, which makes the venv and the
release build, then calls this with --tailor target/release/tailor.
"""

import argparse
import http.client
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import vowpalwabbit
from sklearn import datasets
from sklearn.preprocessing import StandardScaler

# make_classification shapes: (name, classes, informative, features, clusters per class, flip_y).
SHAPES = [
    ("mc-k2-i5-f10", 2, 5, 10, 2, 0.05),
    ("mc-k3-i5-f5", 3, 5, 5, 1, 0.0),
    ("mc-k5-i10-f20", 5, 10, 20, 2, 0.05),
    ("mc-k10-i20-f40", 10, 20, 40, 2, 0.1),
    ("mc-k20-i50-f60", 20, 50, 60, 1, 0.1),
    ("mc-k5-i100-f100", 5, 100, 100, 1, 0.05),
]
DATASETS = ["digits", "wine", "iris"]

VW_CONFIGS = {
    "VW epsilon 0.05": "--cb_explore_adf -q CA --epsilon 0.05",
    "VW squarecb": "--cb_explore_adf -q CA --squarecb",
    "VW greedy": "--cb_explore_adf -q CA --epsilon 0",
}

# Tailor campaign bodies (the id is added per run).
TAILOR_CONFIGS = {
    "Tailor defaults": {"kind": "items"},
    # The default policy at a smaller exploration (the alpha sweep of docs/learning.md).
    "Tailor sparse_linucb a=0.1": {
        "kind": "items",
        "policy": {"type": "sparse_linucb", "alpha": 0.1},
    },
    "Tailor linucb a=1 d=64": {
        "kind": "items",
        "policy": {"type": "linucb", "alpha": 1.0},
        "featurizer": {"dimension": 64},
    },
}


def stream(name, seed, n):
    """(X, y) of one stream and seed: n rows, X standardized, y in 0..k."""
    for sname, k, inf, feat, clusters, flip in SHAPES:
        if sname == name:
            x, y = datasets.make_classification(
                n_samples=n,
                n_features=feat,
                n_informative=inf,
                n_redundant=0,
                n_repeated=0,
                n_classes=k,
                n_clusters_per_class=clusters,
                flip_y=flip,
                random_state=seed,
            )
            return StandardScaler().fit_transform(x), y
    loader = {
        "digits": datasets.load_digits,
        "wine": datasets.load_wine,
        "iris": datasets.load_iris,
    }[name]
    data = loader()
    x = StandardScaler().fit_transform(data.data)
    rng = np.random.RandomState(seed)
    order = np.concatenate([rng.permutation(len(x)) for _ in range(n // len(x) + 1)])[:n]
    return x[order], data.target[order]


def rows(x):
    """Feature values as the short strings both learners get (6 decimals)."""
    return [[f"{v:.6f}" for v in r] for r in x]


class Tailor:
    """A release `tailor serve` on a free loopback port with a temporary data directory."""

    def __init__(self, binary):
        self.dir = tempfile.TemporaryDirectory(prefix="tailor-bakeoff-")
        self.key = secrets.token_hex(16)
        env = dict(os.environ)
        env.update(
            {
                "TAILOR_ADMIN_KEY": self.key,
                "RUST_LOG": "info",
                "NO_COLOR": "1",
                # A benchmark client: the per-key request limit (2000/s by default) is off.
                "TAILOR__RATE_LIMITS__KEY_PER_SECOND": "0",
            }
        )
        self.proc = subprocess.Popen(
            [binary, "serve", "--bind", "127.0.0.1:0", "--data-dir", self.dir.name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        addr = None
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if "listening" in line and "addr=" in line:
                addr = line.split("addr=")[1].split()[0]
                break
        if addr is None:
            self.proc.kill()
            raise RuntimeError("tailor did not report its address")
        # Keep draining its output so it never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self.headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}

    def call(self, method, path, body=None):
        payload = json.dumps(body) if body is not None else None
        try:
            self.conn.request(method, path, body=payload, headers=self.headers)
        except (BrokenPipeError, ConnectionResetError):
            # The server closed the idle keep-alive connection (the VW runs take a while):
            # nothing was sent, so sending again on a new connection is safe.
            self.conn.close()
            self.conn.request(method, path, body=payload, headers=self.headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
        return json.loads(data) if data else None

    def close(self):
        self.conn.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.dir.cleanup()


def play_tailor(server, campaign, body, xs, y, k):
    server.call("POST", "/admin/v1/campaigns", dict(body, id=campaign))
    created = server.call("GET", f"/admin/v1/campaigns/{campaign}")
    candidates = [{"id": f"c{c}", "features": {"class": f"c{c}"}} for c in range(k)]
    decide = f"/v1/campaigns/{campaign}/decide"
    total = 0.0
    start = time.perf_counter()
    for x, label in zip(xs, y):
        # The values go out as the same 6-decimal literals VW reads.
        ctx = "{" + ",".join(f'"f{j}":{v}' for j, v in enumerate(x)) + "}"
        payload = '{"context":' + ctx + ',"candidates":' + json.dumps(candidates) + "}"
        server.conn.request("POST", decide, body=payload, headers=server.headers)
        r = server.conn.getresponse()
        out = json.loads(r.read())
        if r.status != 200:
            raise RuntimeError(f"decide: {r.status} {out}")
        reward = 1.0 if out["actions"][0]["id"] == f"c{label}" else 0.0
        total += reward
        server.call("POST", f"/v1/campaigns/{campaign}/events/{out['event_id']}/reward",
                    {"value": reward})
    secs = time.perf_counter() - start
    return total / len(y), len(y) / secs, created


def play_vw(args, xs, y, k, seed):
    vw = vowpalwabbit.Workspace(f"{args} --quiet --random_seed {seed}")
    rng = np.random.RandomState(seed)
    actions = [f"|A class=c{c}" for c in range(k)]
    total = 0.0
    start = time.perf_counter()
    for x, label in zip(xs, y):
        shared = "shared |C " + " ".join(f"f{j}:{v}" for j, v in enumerate(x))
        pmf = np.asarray(vw.predict([shared] + actions), dtype=float)
        a = int(rng.choice(k, p=pmf / pmf.sum()))
        reward = 1.0 if a == label else 0.0
        total += reward
        lines = [shared] + [
            (f"0:{-reward}:{pmf[a]} " if i == a else "") + act for i, act in enumerate(actions)
        ]
        vw.learn(lines)
    secs = time.perf_counter() - start
    vw.finish()
    return total / len(y), len(y) / secs


def mean_sd(v):
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tailor", default="target/release/tailor")
    ap.add_argument("--examples", type=int, default=10000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--streams", default="", help="only streams whose name contains this")
    ap.add_argument("--learners", default="", help="only learners whose name contains this")
    ap.add_argument("--json", help="also write every run's numbers here")
    ap.add_argument("--dump", help="write each stream and seed as CSV (label first) and exit")
    a = ap.parse_args()
    # A SIGTERM still stops the server and removes its data directory (the `finally` below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    names = [s[0] for s in SHAPES] + DATASETS
    names = [n for n in names if a.streams in n]
    if a.dump:
        os.makedirs(a.dump, exist_ok=True)
        for name in names:
            for seed in range(a.seeds):
                x, y = stream(name, seed, a.examples)
                with open(os.path.join(a.dump, f"{name}-s{seed}.csv"), "w") as f:
                    f.write("label," + ",".join(f"f{j}" for j in range(x.shape[1])) + "\n")
                    for r, l in zip(rows(x), y):
                        f.write(f"c{l}," + ",".join(r) + "\n")
        return
    learners = [n for n in list(TAILOR_CONFIGS) + list(VW_CONFIGS) if a.learners in n]
    server = Tailor(a.tailor) if any(n in TAILOR_CONFIGS for n in learners) else None
    results = {}
    print(f"HTTP bake-off: {a.examples} decisions per stream and seed, {a.seeds} seeds; "
          "progressive reward mean ± sd, decisions/s", flush=True)
    try:
        for name in names:
            runs = [stream(name, seed, a.examples) for seed in range(a.seeds)]
            k = int(max(int(y.max()) for _, y in runs)) + 1
            print(f"\n## {name} ({k} classes, {runs[0][0].shape[1]} features)\n"
                  "| learner | progressive reward | decisions/s |\n|---|---|---|", flush=True)
            results[name] = {}
            for learner in learners:
                out = []
                for seed, (x, y) in enumerate(runs):
                    xs = rows(x)
                    if learner in TAILOR_CONFIGS:
                        slug = learner.split()[1].replace("=", "").replace(".", "")
                        campaign = f"{name}-{slug}-s{seed}"
                        r, rate, _ = play_tailor(server, campaign, TAILOR_CONFIGS[learner],
                                                 xs, y, k)
                    else:
                        r, rate = play_vw(VW_CONFIGS[learner], xs, y, k, seed)
                    out.append((r, rate))
                m, sd = mean_sd([o[0] for o in out])
                rate = statistics.mean(o[1] for o in out)
                results[name][learner] = {"mean": m, "sd": sd, "per_second": rate,
                                          "runs": [o[0] for o in out]}
                print(f"| {learner} | {m:.3f} ± {sd:.3f} | {rate:.0f} |", flush=True)
    finally:
        if server:
            server.close()

    print("\n## Summary\n| stream | Tailor defaults | best VW | defaults − best VW |"
          " defaults / linucb d=64 decisions/s |\n|---|---|---|---|---|")
    for name, res in results.items():
        vw = {k: v for k, v in res.items() if k.startswith("VW")}
        d = res.get("Tailor defaults")
        old = res.get("Tailor linucb a=1 d=64")
        best = max(vw.items(), key=lambda kv: kv[1]["mean"]) if vw else None
        cells = [name,
                 f"{d['mean']:.3f} ± {d['sd']:.3f}" if d else "–",
                 f"{best[1]['mean']:.3f} ({best[0][3:]})" if best else "–",
                 f"{d['mean'] - best[1]['mean']:+.3f}" if d and best else "–",
                 f"{d['per_second'] / old['per_second']:.2f}" if d and old else "–"]
        print("| " + " | ".join(cells) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
