#!/usr/bin/env bash
# Runs the local devnet (the README's first command): N nodes on 127.0.0.1 with
# temporary stores, sample bulletins of every kind, and each bulletin's arrival
# at each node with its latency. Arguments go to `herald devnet`.
#
#   scripts/devnet.sh                  # 5 nodes; Ctrl-C to stop
#   scripts/devnet.sh --nodes 10 --count 20
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -p herald-node --bin herald -- devnet "$@"
