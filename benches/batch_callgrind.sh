#!/usr/bin/env bash
# Instructions per row of a 100k-style `Batch` insert against one raw rusqlite transaction with
# a prepared insert, counted by valgrind's callgrind (stable on a loaded machine, where
# wall-clock medians are not). Per row = (count at 2N - count at N) / N: fixed costs cancel.
#
#   benches/batch_callgrind.sh          # N = 5000
#   benches/batch_callgrind.sh 20000
#   BATCH_ROWS_BIN=path benches/batch_callgrind.sh   # an already built example (another build)
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-5000}
bin=${BATCH_ROWS_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --example batch_rows >&2
    bin=target/release/examples/batch_rows
fi
[ -x "$bin" ] || { echo "no batch_rows example binary: $bin" >&2; exit 1; }

count() {
    local out
    if ! out=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        --toggle-collect='*batch_rows::measured*' "$bin" "$1" "$2" 2>&1); then
        echo "$out" | grep -v '^==' >&2
        echo "$1 $2 failed" >&2
        exit 1
    fi
    echo "$out" | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

printf '%-20s %14s %14s %12s\n' side "at $n" "at $((2 * n))" per_row
for side in strata raw raw_autocheckpoint; do
    a=$(count "$side" "$n")
    b=$(count "$side" $((2 * n)))
    awk -v s="$side" -v a="$a" -v b="$b" -v n="$n" \
        'BEGIN { printf "%-20s %14.0f %14.0f %12.0f\n", s, a, b, (b - a) / n }'
done
