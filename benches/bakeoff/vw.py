"""Vowpal Wabbit's cb_explore_adf on the bake-off's streams (docs/learning.md).

Plays every CSV that `bakeoff --dump DIR` wrote (label first, then f0..fN), in the same order,
as a contextual bandit: shared namespace C holds the features, each class is an action with a
categorical `class` feature in namespace A, cost = -reward, one online pass. Prints progressive
reward mean ± sd over the seeds per stream and configuration.

    python3 -m venv /tmp/vw && /tmp/vw/bin/pip install vowpalwabbit
    cargo run --release -p tailor-benches --bin bakeoff -- --dump /tmp/streams [--csv ...]
    /tmp/vw/bin/python benches/bakeoff/vw.py /tmp/streams
"""

import collections
import glob
import os
import random
import statistics
import sys
import time

import vowpalwabbit

CONFIGS = {
    "epsilon 0.05 -q CA": "--cb_explore_adf -q CA --epsilon 0.05",
    "squarecb -q CA": "--cb_explore_adf -q CA --squarecb",
    "greedy -q CA": "--cb_explore_adf -q CA --epsilon 0",
}


def play(path, args, seed):
    rows = []
    with open(path) as f:
        next(f)
        for line in f:
            cells = line.strip().split(",")
            rows.append((cells[0], cells[1:]))
    classes = sorted({r[0] for r in rows}, key=lambda c: int(c[1:]))
    vw = vowpalwabbit.Workspace(f"{args} --quiet --random_seed {seed}")
    rng = random.Random(seed)
    total = 0.0
    start = time.time()
    for label, xs in rows:
        shared = "shared |C " + " ".join(f"f{j}:{v}" for j, v in enumerate(xs))
        actions = [f"|A class={c}" for c in classes]
        pmf = vw.predict([shared] + actions)
        a = rng.choices(range(len(classes)), weights=pmf)[0]
        reward = 1.0 if classes[a] == label else 0.0
        total += reward
        lines = [shared] + [
            (f"0:{-reward}:{pmf[a]} " if i == a else "") + act for i, act in enumerate(actions)
        ]
        vw.learn(lines)
    vw.finish()
    return total / len(rows), len(rows) / (time.time() - start)


def main():
    d = sys.argv[1]
    streams = collections.defaultdict(list)
    for p in sorted(glob.glob(os.path.join(d, "*.csv"))):
        name, seed = p[:-4].rsplit("-s", 1)
        streams[os.path.basename(name)].append((int(seed), p))
    for name, files in streams.items():
        print(f"\n## {name}\n| VW cb_explore_adf | progressive reward | decisions/s |\n|---|---|---|")
        for cname, args in CONFIGS.items():
            runs = [play(p, args, seed) for seed, p in sorted(files)]
            r = [x[0] for x in runs]
            sd = statistics.stdev(r) if len(r) > 1 else 0.0
            rate = statistics.mean(x[1] for x in runs)
            print(f"| {cname} | {statistics.mean(r):.3f} ± {sd:.3f} | {rate:.0f} |", flush=True)


if __name__ == "__main__":
    main()
