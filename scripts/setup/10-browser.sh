#!/usr/bin/env bash
# The dashboard's real-browser test (tests/e2e/browser.rs) needs Debian's headless chromium and
# playwright-core (npm, pinned in tests/browser/package-lock.json; it drives the system browser,
# no browser is downloaded). Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ ! -x /usr/bin/chromium ]; then
    echo "installing Debian's chromium (apt-get)"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
        echo "error: /usr/bin/chromium is missing and installing it needs root (apt-get install -y chromium)" >&2
        exit 1
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "error: the browser test needs Node.js 20+ and npm on PATH" >&2
    exit 1
fi

lock=tests/browser/package-lock.json
stamp=tests/browser/node_modules/.tailor-lock.sha256
want="$(sha256sum "$lock" | cut -d' ' -f1)"
if [ ! -d tests/browser/node_modules/playwright-core ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing tests/browser npm packages (npm ci)"
    (cd tests/browser && npm ci --ignore-scripts --no-audit --no-fund)
    echo "$want" > "$stamp"
fi
