#!/usr/bin/env python3
"""Top functions of a callgrind profile by inclusive and by self instructions.

    bench/core-vs-raft-rs/cg_functions.py target/callgrind/raft-core-B1.out [--top 15] [--rounds N]
    bench/core-vs-raft-rs/cg_functions.py PROFILE --rounds N --callees maybe_commit

callgrind_annotate (3.19) splits a function into one row per source file its
inlined code came from, and its inclusive rows cannot be added up; this reads
the profile itself: self = the function's own cost lines (inlined code
included), inclusive = self + the cost of every call it makes to another
function. Functions inlined into their callers have no row of their own.
With --rounds, costs are also shown per round. --callees SUBSTRING lists,
for each function whose name contains it, its self cost and the inclusive
cost of its calls to each callee.
"""
import argparse
import collections
import re

NAME = re.compile(r"\((\d+)\)(?: (.*))?")


def parse(path):
    names = {}
    selfc = collections.Counter()
    incl = collections.Counter()
    edges = collections.defaultdict(collections.Counter)
    total = 0
    npos = 1
    fn = callee = None
    call_cost_next = False

    def resolve(spec):
        m = NAME.match(spec)
        if not m:
            return spec
        ident, name = m.groups()
        if name is not None:
            names[ident] = name
        return names[ident]

    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                cost = int(parts[npos]) if len(parts) > npos else 0
                if call_cost_next:
                    call_cost_next = False
                    if callee != fn:
                        incl[fn] += cost
                    edges[fn][callee] += cost
                else:
                    selfc[fn] += cost
                    incl[fn] += cost
            elif line.startswith("fn="):
                fn = resolve(line[3:])
            elif line.startswith("cfn="):
                callee = resolve(line[4:])
            elif line.startswith("calls="):
                call_cost_next = True
            elif line.startswith("positions:"):
                npos = len(line.split()[1:])
            elif line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
    return selfc, incl, edges, total or sum(selfc.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=0)
    ap.add_argument("--callees", metavar="SUBSTRING")
    a = ap.parse_args()
    selfc, incl, edges, total = parse(a.profile)

    def per(cost):
        return f" {cost / a.rounds:10.1f}/round" if a.rounds else ""

    if a.callees:
        for name in sorted((n for n in incl if a.callees in n), key=lambda n: -incl[n]):
            print(f"{name}: inclusive {incl[name]:,}{per(incl[name])}")
            print(f"{selfc[name]:14,}{per(selfc[name])}  (self)")
            for callee, cost in edges[name].most_common():
                print(f"{cost:14,}{per(cost)}  {callee}")
            print()
        return
    print(f"{a.profile}: {total:,} Ir" + (f", {total / a.rounds:,.1f} per round" if a.rounds else ""))
    # The frames around the measured rounds (main, lang_start, ...) hold
    # everything; leave them out.
    outer = {name for name, cost in incl.items() if cost >= total and "measured_rounds" not in name}
    for title, costs in (("inclusive", incl), ("self", selfc)):
        print(f"\n== top {a.top} by {title} Ir")
        rows = [(n, c) for n, c in costs.most_common() if n not in outer][: a.top]
        for name, cost in rows:
            print(f"{cost:14,} {100 * cost / total:6.2f}%{per(cost)}  {name}")


if __name__ == "__main__":
    main()
