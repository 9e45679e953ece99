#!/usr/bin/env bash
# Runs the benchmarks recorded in docs/BENCHMARKS.md, one after the other
# (never two at once: each reports ratios against a baseline measured in the
# same run, and a second benchmark would be noise in the first).
#
#   scripts/bench.sh                  # all of them, full size (about 30 minutes)
#   scripts/bench.sh --quick          # smoke runs of each (a few minutes)
#   scripts/bench.sh propagation ...  # some of them: codec ingest memory catchup propagation
#
# Output goes to the terminal and to target/bench-logs/<name>.log. Copy the
# figures into docs/BENCHMARKS.md with the date and the machine's load.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
names=()
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        codec | ingest | memory | catchup | propagation) names+=("$arg") ;;
        *)
            echo "bench.sh: unknown argument '$arg' (use --quick, codec, ingest, memory, catchup, propagation)" >&2
            exit 2
            ;;
    esac
done
if [ ${#names[@]} -eq 0 ]; then
    names=(codec ingest memory catchup propagation)
fi
logs=target/bench-logs
mkdir -p "$logs"
if [ "$quick" = 1 ]; then
    export HERALD_BENCH_QUICK=1
fi

for name in "${names[@]}"; do
    echo "== $name ($(date -u +%H:%M), load: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown))"
    case "$name" in
        codec) cmd=(cargo bench -p herald-keys --bench bulletin) ;;
        ingest) cmd=(cargo bench -p herald-node --bench ingest) ;;
        memory) cmd=(cargo bench -p herald-node --bench memory) ;;
        catchup) cmd=(cargo bench -p herald-node --bench catchup) ;;
        propagation)
            if [ "$quick" = 1 ]; then
                cmd=(cargo run --release -p herald-node --example bench_propagation -- coordinator --nodes 10 --rounds 1 --messages 50)
            else
                cmd=(cargo run --release -p herald-node --example bench_propagation -- coordinator)
            fi
            ;;
    esac
    "${cmd[@]}" 2>&1 | tee "$logs/$name.log"
done
