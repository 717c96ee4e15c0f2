#!/usr/bin/env python3
"""The last `cargo bench` run's medians as a markdown table.

    bench/core-vs-raft-rs/criterion_table.py [target/criterion]

Per B: each implementation's median time per round (criterion's median of
the per-iteration sample means, with its 95% interval), ns per entry, and
raft-core's median as a fraction of each raft-rs variant's.
"""
import json
import os
import sys

IMPLS = ["raft-core", "raft-rs", "raft-rs-each"]
BATCHES = [1, 10, 100, 1000]


def median(root, impl, batch):
    path = os.path.join(root, "round", impl, str(batch), "new", "estimates.json")
    try:
        with open(path) as f:
            m = json.load(f)["median"]
    except FileNotFoundError:
        return None
    ci = m["confidence_interval"]
    return m["point_estimate"], ci["lower_bound"], ci["upper_bound"]


def fmt(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__) or ".", "target", "criterion")
    head = ["B"]
    for impl in IMPLS:
        head += [f"{impl} median/round [95% CI]", f"{impl} ns/entry"]
    head += ["raft-core / raft-rs", "raft-core / raft-rs-each"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for b in BATCHES:
        row = [str(b)]
        med = {}
        for impl in IMPLS:
            m = median(root, impl, b)
            if m is None:
                row += ["-", "-"]
                continue
            med[impl] = m[0]
            row += [f"{fmt(m[0])} [{fmt(m[1])}, {fmt(m[2])}]", f"{m[0] / b:.0f}"]
        for other in IMPLS[1:]:
            row.append(f"{med['raft-core'] / med[other]:.2f}" if "raft-core" in med and other in med else "-")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
