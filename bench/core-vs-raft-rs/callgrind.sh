#!/usr/bin/env bash
# Instructions per replication round, counted by callgrind, for raft-core and
# raft-rs (see README.md). Deterministic: two runs give the same counts to
# within a few instructions per round, so A/B comparisons do not depend on
# the machine's load.
#
#   bench/core-vs-raft-rs/callgrind.sh                 # B = 1 and 1000, all impls
#   BATCHES="1 10 100 1000" IMPLS="raft-core" bench/core-vs-raft-rs/callgrind.sh
#
# Only the measured rounds are counted (--toggle-collect on the binary's
# measured_rounds function, after its warm-up). ROUNDS_ENTRIES (default
# 20000) sets the entries per measured window: N = ROUNDS_ENTRIES / B rounds,
# a multiple of the 10,000-entry compaction period so every window holds the
# same number of compactions. Profiles stay in target/callgrind/ for
# callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")"

IMPLS=${IMPLS:-"raft-core raft-rs raft-rs-each"}
BATCHES=${BATCHES:-"1 1000"}
ROUNDS_ENTRIES=${ROUNDS_ENTRIES:-20000}
OUT=target/callgrind

command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
# The release profile keeps symbols and line tables (debug = 1).
cargo build --release --quiet --bin rounds
mkdir -p "$OUT"

declare -A per_round
printf '%-13s %6s %7s %14s %12s %10s\n' impl B rounds "Ir total" "Ir/round" "Ir/entry"
for b in $BATCHES; do
    rounds=$(( ROUNDS_ENTRIES / b ))
    (( rounds >= 1 )) || { echo "B=$b exceeds ROUNDS_ENTRIES=$ROUNDS_ENTRIES" >&2; exit 1; }
    for impl in $IMPLS; do
        file="$OUT/$impl-B$b.out"
        valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured_rounds*' \
            --callgrind-out-file="$file" \
            ./target/release/rounds --impl "$impl" --batch "$b" --rounds "$rounds" \
            >"$OUT/$impl-B$b.stdout" 2>"$OUT/$impl-B$b.log"
        total=$(awk '/^totals:/ { print $2 }' "$file")
        per_round[$impl,$b]=$(( total / rounds ))
        printf '%-13s %6d %7d %14d %12d %10.1f\n' "$impl" "$b" "$rounds" "$total" \
            "${per_round[$impl,$b]}" "$(echo "$total / $rounds / $b" | bc -l)"
    done
done

if [[ " $IMPLS " == *" raft-core "* && " $IMPLS " == *" raft-rs "* ]]; then
    echo
    echo "raft-core / raft-rs, instructions per round:"
    for b in $BATCHES; do
        printf '  B=%-5d %.3f\n' "$b" "$(echo "${per_round[raft-core,$b]} / ${per_round[raft-rs,$b]}" | bc -l)"
    done
fi
echo
echo "profiles: $PWD/$OUT/<impl>-B<batch>.out (callgrind_annotate --inclusive=yes FILE)"
