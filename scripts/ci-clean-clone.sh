#!/usr/bin/env bash
# Runs .ci/run the way CI does: on a clean clone of the committed HEAD, so that
# nothing uncommitted or ignored in this checkout can make it pass. Reuses a
# target directory between runs (HERALD_CI_TARGET, default /tmp/herald-ci-target)
# to keep the libp2p build out of every run.
#
#   scripts/ci-clean-clone.sh
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
clone="$(mktemp -d /tmp/herald-ci-clone.XXXXXX)"
trap 'rm -rf "$clone"' EXIT
git clone --quiet "$repo" "$clone"
cd "$clone"
export CARGO_TARGET_DIR="${HERALD_CI_TARGET:-/tmp/herald-ci-target}"
time .ci/run
