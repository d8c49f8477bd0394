#!/usr/bin/env bash
# Instructions per iteration of diesel_suite's cases, strata against raw rusqlite, counted by
# valgrind's callgrind: stable on a loaded machine, where wall-clock medians are not.
#
#   benches/callgrind.sh                      # every workload
#   benches/callgrind.sh pk_lookup            # some of them
#   DIESEL_SUITE_BIN=path benches/callgrind.sh  # an already built bench binary (e.g. an older
#                                             # commit's, to compare two builds in one run)
#
# Each case runs in its own process: 200 warm-up iterations, then N iterations each inside
# `measured`, the only function whose instructions are collected (--toggle-collect). The
# figure is the collected instructions divided by N: the whole iteration, the workload's own
# SQLite and mapping work included, on the calling thread only.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${DIESEL_SUITE_BIN:-}
if [ -z "$bin" ]; then
    bin=$(cargo bench --bench diesel_suite --no-run 2>&1 |
        sed -n 's/.*Executable .*(\(.*diesel_suite-[^)]*\))$/\1/p' | tail -1)
fi
[ -x "$bin" ] || { echo "no diesel_suite bench binary: $bin" >&2; exit 1; }

workloads=("$@")
if [ ${#workloads[@]} -eq 0 ]; then
    workloads=(pk_lookup trivial_query_100 trivial_query_10000 medium_complex_query_100
        insert_100_users loading_associations)
fi

# Iterations per case: enough that the sampled tracing of a strata read (one traced call in up
# to 1024) is averaged in, few enough for valgrind's ~50x slowdown.
iterations() {
    case $1 in
        pk_lookup) echo 20000 ;;
        trivial_query_10000) echo 50 ;;
        loading_associations) echo 500 ;;
        *) echo 2000 ;;
    esac
}

count() {
    local out
    if ! out=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        --toggle-collect='*diesel_suite::measured*' \
        "$bin" --callgrind "$1" "$2" "$3" 2>&1); then
        echo "$out" | grep -v '^==' >&2
        echo "$1 $2 failed" >&2
        exit 1
    fi
    echo "$out" | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

# STRATA_RARELY_TRACED=1 adds a column: strata with a trace budget so small that one call in
# 1024 is traced, i.e. the read path without its sampled statement tracing. Under valgrind the
# sampler (which decides on wall-clock time) traces far more calls than on the bare machine.
rare=${STRATA_RARELY_TRACED:-0}
if [ "$rare" = 1 ]; then
    printf '%-26s %14s %14s %7s %14s %7s\n' workload strata raw ratio rarely_traced ratio
else
    printf '%-26s %14s %14s %7s\n' workload strata raw ratio
fi
for w in "${workloads[@]}"; do
    n=$(iterations "$w")
    s=$(count "$w" strata "$n")
    r=$(count "$w" raw "$n")
    if [ "$rare" = 1 ]; then
        q=$(count "$w" strata_rarely_traced "$n")
        awk -v w="$w" -v s="$s" -v r="$r" -v q="$q" -v n="$n" 'BEGIN {
            printf "%-26s %14.0f %14.0f %6.2fx %14.0f %6.2fx\n", w, s / n, r / n, s / r, q / n, q / r }'
    else
        awk -v w="$w" -v s="$s" -v r="$r" -v n="$n" \
            'BEGIN { printf "%-26s %14.0f %14.0f %6.2fx\n", w, s / n, r / n, s / r }'
    fi
done
