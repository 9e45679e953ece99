#!/usr/bin/env bash
# Fuzzes the decoders of everything a peer or a file can hand a node (signed
# bulletins, registry updates, sync requests and responses) with cargo-fuzz.
#
#   scripts/fuzz.sh                 # every target for 60 s each
#   scripts/fuzz.sh 600             # every target for 600 s each
#   scripts/fuzz.sh 60 sync_request # one target
#
# Needs the nightly toolchain (rustup toolchain install nightly) and cargo-fuzz
# (installed here if missing). Crashes land in protocol/fuzz/artifacts/<target>/;
# rerun one with: cargo +nightly fuzz run <target> <file> (from protocol/).
# The corpus starts from the golden vectors when python3 is there to read them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(signed_bulletin registry_update sync_request sync_response)
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: the nightly toolchain is needed: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

corpus=protocol/fuzz/corpus
mkdir -p "$corpus"
if command -v python3 >/dev/null 2>&1; then
    python3 - "$corpus" <<'PY'
import json, os, sys
corpus = sys.argv[1]
golden = json.load(open("tests/vectors/golden.json"))
for target, section in (("signed_bulletin", "bulletins"), ("registry_update", "registry")):
    os.makedirs(os.path.join(corpus, target), exist_ok=True)
    for i, item in enumerate(golden[section]):
        for field in ("wire", "body"):
            with open(os.path.join(corpus, target, f"golden-{i}-{field}"), "wb") as f:
                f.write(bytes.fromhex(item[field]))
PY
fi

cd protocol
for target in "${targets[@]}"; do
    echo "== $target: ${seconds} s"
    mkdir -p "fuzz/corpus/$target"
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" -- -max_total_time="$seconds" -max_len=70000
done
