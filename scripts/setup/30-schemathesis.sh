#!/usr/bin/env bash
# Schemathesis for tests/e2e/schemathesis.rs (the OpenAPI fuzzer run against /openapi.json): a
# virtualenv at target/stenv with tests/schemathesis/requirements.txt installed (every version
# pinned). Its own virtualenv so its dependencies never meet the Personalizer client's.
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/setup/venv.bash
install_venv target/stenv tests/schemathesis/requirements.txt schemathesis
