#!/usr/bin/env bash
# Wall and CPU time of a 100k-row `Batch` insert against one raw rusqlite transaction, the
# sides interleaved run by run (examples/batch_rows, one process per run), medians printed. On a
# shared, loaded machine criterion measures one case after the other while the load moves under
# them; interleaving gives each side the same load, and the CPU time of the inserting thread
# does not depend on it.
#
#   benches/batch_wall.sh            # 15 runs of each side, 100k rows
#   benches/batch_wall.sh 31 200000
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-15}
rows=${2:-100000}
bin=${BATCH_ROWS_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --example batch_rows >&2
    bin=target/release/examples/batch_rows
fi
sides=(strata raw_autocheckpoint raw)
for _ in $(seq "$runs"); do
    for side in "${sides[@]}"; do
        # "N rows in W wall, C cpu on this thread, ...": durations in Rust's Debug form.
        "$bin" "$side" "$rows" 2>&1 | awk -v s="$side" '
            function ms(d) {
                if (d ~ /ms$/) return d + 0
                if (d ~ /µs$/) return d / 1000
                if (d ~ /ns$/) return d / 1000000
                return d * 1000
            }
            / rows in / { print s, ms($4), ms($6) }'
    done
done | awk -v rows="$rows" '
    { wall[$1] = wall[$1] " " $2; cpu[$1] = cpu[$1] " " $3 }
    function median(list,   a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) {
            t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
        }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END {
        printf "%-20s %12s %14s %12s\n", "side", "wall_ms", "M_rows_per_s", "thread_cpu_ms"
        split("strata raw_autocheckpoint raw", order, " ")
        for (k = 1; k <= 3; k++) {
            s = order[k]; w = median(wall[s]); c = median(cpu[s])
            printf "%-20s %12.1f %14.2f %12.1f\n", s, w, rows / w / 1000, c
        }
    }'
