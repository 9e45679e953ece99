#!/usr/bin/env bash
# Checks the local web page's script in jsdom (scripts/web/check.mjs): rendering
# as text, the token on every request, the login on a refused token, and the
# publish form's draft. Needs Node.js 18 or newer; installs jsdom from npm into
# target/web-check the first time. Not part of .ci/run (it needs npm).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null 2>&1; then
    echo "web-check.sh: Node.js is needed (apt-get install nodejs npm)" >&2
    exit 2
fi
dir=target/web-check
if [ ! -d "$dir/node_modules/jsdom" ]; then
    mkdir -p "$dir"
    (cd "$dir" && npm install --silent --no-audit --no-fund jsdom@24 >/dev/null)
fi
# The script runs from beside its node_modules, so that it finds jsdom.
cp scripts/web/check.mjs "$dir/check.mjs"
node "$dir/check.mjs" "$PWD/node/src/web"
