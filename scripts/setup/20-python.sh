#!/usr/bin/env bash
# The official Personalizer Python client for tests/e2e/personalizer.rs: a virtualenv at
# target/pyenv with tests/personalizer/requirements.txt installed. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/setup/venv.bash
install_venv target/pyenv tests/personalizer/requirements.txt "the python test client"
