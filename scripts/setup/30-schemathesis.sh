#!/usr/bin/env bash
# Schemathesis for tests/e2e/schemathesis.rs (the OpenAPI fuzzer run against /openapi.json): a
# virtualenv at target/stenv with tests/schemathesis/requirements.txt installed (every version
# pinned). Its own virtualenv so its dependencies never meet the Personalizer client's.
# Idempotent: skips when the installed requirements file matches.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/stenv
req=tests/schemathesis/requirements.txt
stamp=$venv/.requirements
if [ -x "$venv/bin/schemathesis" ] && cmp -s "$req" "$stamp" 2>/dev/null; then
    echo "schemathesis already installed in $venv"
    exit 0
fi
if ! command -v python3 >/dev/null; then
    echo "python3 is required for the schemathesis test (apt-get install python3 python3-venv)" >&2
    exit 1
fi
if ! python3 -m venv "$venv" 2>/dev/null; then
    if command -v apt-get >/dev/null; then
        echo "installing python3-venv"
        apt-get update -qq && apt-get install -y -qq python3-venv
        python3 -m venv "$venv"
    else
        echo "python3 -m venv failed; install the venv module for python3" >&2
        exit 1
    fi
fi
echo "installing $req into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
