#!/usr/bin/env bash
# Where the strata engine's CPU time goes under `strata load` at 16 client threads.
#
# Records the whole process with perf (software cpu-clock events: a VM has no hardware
# counters; call graphs unwound through .eh_frame, so the release build needs no debug info),
# then prints:
#   1. per operation: the share of all samples under that operation's function (each
#      operation of the workload is a function of its own, never inlined: Worker::get_user, ...);
#   2. the time by where it is spent (SQLite, strata's caches, monitoring, group commit, the
#      allocator, the kernel, ...), from the self time of every symbol;
#   3. the 30 symbols with the most self time.
#
# Usage: benches/profile_load.sh [DURATION] [THREADS]   (defaults: 10s, 16)
# Needs perf (perf_event_paranoid <= 2 is enough for a process of your own).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
THREADS=${2:-16}
OUT=${OUT:-target/profile-load}
FREQ=${FREQ:-199}

cargo build --release -p strata-cli
mkdir -p "$OUT"
BIN=target/release/strata
DB="$OUT/load.db"
rm -f "$DB" "$DB-wal" "$DB-shm" "$DB-lock"
# Seed first, so that the profile is of the workload only.
"$BIN" load --db "$DB" --iterations 1 --quiet >/dev/null
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
perf record -e cpu-clock -F "$FREQ" --call-graph dwarf,16384 -o "$OUT/perf.data" -- \
    "$BIN" load --db "$DB" --threads "$THREADS" --duration "$DURATION" --quiet >"$OUT/load.txt" 2>/dev/null
grep -A2 '^Throughput' "$OUT/load.txt"

perf report -i "$OUT/perf.data" --children --sort symbol --stdio -g none --percent-limit 0.5 \
    2>/dev/null >"$OUT/children.txt"
perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --stdio -g none \
    2>/dev/null >"$OUT/self.txt"

echo
echo "== CPU time per operation (inclusive, % of all samples of the process) =="
for op in get_user categories_of expenses_page expenses_between daily_metrics suggest_category \
    create_expense update_expense create_category; do
    awk -v op="ops::Worker::$op" 'index($0, op) && $1 ~ /%$/ { printf "  %-18s %s\n", substr(op, 14), $1; exit }' \
        "$OUT/children.txt"
done
awk '/strata::writer::/ && $1 ~ /%$/ { print "  (group commit, all of strata::writer under any caller: " $1 ")"; exit }' \
    "$OUT/children.txt" || true
awk '/ sqlite3Reprepare/ && $1 ~ /%$/ { print "  (statements SQLite re-prepared, sqlite3Reprepare: " $1 ")"; exit }' \
    "$OUT/children.txt" || true

echo
echo "== Self time by where it is spent (% of all samples) =="
awk '
    $1 ~ /%$/ {
        pct = $1; sub(/%/, "", pct)
        line = $0
        where = "other"
        if (line ~ /\[kernel/) where = "kernel (syscalls, futex, scheduling, page faults)"
        else if (line ~ /sqlite3|[^a-z]vdbe|btree|pager|Vdbe|Btree|Pager|walIndex|wal[A-Z]/) where = "SQLite"
        else if (line ~ /malloc|free|realloc|cfree|_int_|alloc::/) where = "allocator"
        else if (line ~ /strata::cache/) where = "strata caches"
        else if (line ~ /strata::monitor|hdrhistogram/) where = "strata monitoring"
        else if (line ~ /strata::events/) where = "strata change capture"
        else if (line ~ /strata::writer/) where = "strata group commit"
        else if (line ~ /strata::pool|r2d2|parking_lot|crossbeam/) where = "pools and locks"
        else if (line ~ /strata::/) where = "strata (other)"
        else if (line ~ /rusqlite/) where = "rusqlite"
        else if (line ~ /strata_cli|rand|zipf/) where = "workload driver"
        else if (line ~ /libc|pthread|memcpy|memmove|memset|__lll/) where = "libc"
        total[where] += pct
    }
    END { for (w in total) printf "  %6.2f%%  %s\n", total[w], w }
' "$OUT/self.txt" | sort -rn

echo
echo "== Top 30 symbols by self time =="
grep -E '^ +[0-9.]+%' "$OUT/self.txt" | head -30
echo
echo "files: $OUT/perf.data, $OUT/children.txt, $OUT/self.txt, $OUT/load.txt"
