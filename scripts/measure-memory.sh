#!/usr/bin/env bash
# Memory of a release `tailor serve` (docs/security/memory.md): its resident set under sustained
# load, and its peak while exporting a campaign's decision log.
#
#   scripts/measure-memory.sh soak DATA_DIR [SECONDS] [CONCURRENCY] [CANDIDATES] [DECISIONS]
#       Start a server on DATA_DIR, load it with `loadgen soak` (decides with fresh event ids, a
#       reward for every fourth), print the RSS curve (TSV: seconds, decisions, errors, VmRSS MB,
#       VmHWM MB) every SAMPLE seconds, stop it. DECISIONS > 0 stops after that many decisions.
#   scripts/measure-memory.sh settle DATA_DIR [SECONDS]
#       Start an idle server on DATA_DIR for SECONDS (default 40) so the reward windows a soak
#       left open close, stop it, print the bytes of the data directory's parts.
#   scripts/measure-memory.sh export DATA_DIR [CAMPAIGN]
#       Start a fresh server on DATA_DIR, stream GET /admin/v1/campaigns/CAMPAIGN/log to a counter,
#       print lines, bytes, seconds and the server's VmRSS before and VmHWM (peak) after.
#
# Environment: TAILOR_BIN, LOADGEN_BIN (default target/release/...), SAMPLE (seconds, default
# 10), LOG_REQUESTS=1 (the soak's campaign logs its requests: what the export reads), and any
# TAILOR__* setting (e.g. TAILOR__STORAGE__CACHE_CAPACITY_BYTES, TAILOR__STORAGE__LOG_RETENTION_DAYS).
# CAMPAIGN_JSON (soak): the campaign `load` to create first instead of loadgen's default, e.g.
# '{"id":"load","policy":{"type":"thompson"},"featurizer":{"dimension":32},
#   "reward_wait_seconds":60,"return_window_seconds":60}' (retention keeps a log at least as long
# as its campaign's return window, 30 days by default).
# SMAPS=1 (soak): also print the server's anonymous and file-backed resident memory (smaps_rollup)
# at each sample, to stderr.
# Build first: cargo build --release -p tailor-cli --bin tailor -p tailor-benches --bin loadgen
set -euo pipefail

TARGET=${CARGO_TARGET_DIR:-target}
TAILOR=${TAILOR_BIN:-$TARGET/release/tailor}
LOADGEN=${LOADGEN_BIN:-$TARGET/release/loadgen}
KEY=measure-memory-editor-key-0123456789
SAMPLE=${SAMPLE:-10}

start_server() {
    local dir=$1
    mkdir -p "$dir"
    RUST_LOG=${RUST_LOG:-warn,tailor=info,tailor_server=info} NO_COLOR=1 \
        "$TAILOR" serve --bind 127.0.0.1:0 --data-dir "$dir" --admin-key "$KEY" \
        >"$dir.server.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 600); do
        ADDR=$(grep -o 'listening addr=[0-9.:]*' "$dir.server.log" | head -1 | cut -d= -f2 || true)
        [ -n "$ADDR" ] && return 0
        kill -0 "$PID" 2>/dev/null || { cat "$dir.server.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "the server did not start" >&2
    exit 1
}

stop_server() {
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
}

mem() { awk -v f="$2:" '$1 == f { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

case "${1:-}" in
soak)
    dir=${2:?data dir}
    start_server "$dir"
    trap stop_server EXIT
    if [ -n "${CAMPAIGN_JSON:-}" ]; then
        curl -sf -o /dev/null -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
            -d "$CAMPAIGN_JSON" "http://$ADDR/admin/v1/campaigns"
    fi
    if [ -n "${SMAPS:-}" ]; then
        (
            t=0
            while kill -0 "$PID" 2>/dev/null; do
                awk -v t="$t" 'BEGIN { printf "smaps t=%ss", t }
                    /^(Rss|Anonymous|Private_Clean|Shared_Clean):/ { printf " %s%.1fMB", $1, $2 / 1024 }
                    END { print "" }' "/proc/$PID/smaps_rollup" >&2 2>/dev/null || true
                sleep "$SAMPLE"
                t=$((t + SAMPLE))
            done
        ) &
    fi
    "$LOADGEN" soak --url "http://$ADDR" --key "$KEY" --pid "$PID" \
        --seconds "${3:-600}" --concurrency "${4:-256}" --candidates "${5:-10}" \
        --decisions "${6:-0}" --sample-seconds "$SAMPLE" --prefix "soak-$(date +%s)" \
        ${LOG_REQUESTS:+--log-requests}
    ;;
settle)
    dir=${2:?data dir}
    start_server "$dir"
    sleep "${3:-40}"
    stop_server
    du -sb "$dir"/*
    du -sb "$dir"
    ;;
export)
    dir=${2:?data dir}
    campaign=${3:-load}
    start_server "$dir"
    trap stop_server EXIT
    sleep 2
    echo "server pid $PID: VmRSS before export $(mem "$PID" VmRSS) MB, VmHWM $(mem "$PID" VmHWM) MB"
    start=$(date +%s.%N)
    read -r lines bytes < <(curl -sfN -H "Authorization: Bearer $KEY" \
        "http://$ADDR/admin/v1/campaigns/$campaign/log${QUERY:-}" | wc -lc)
    end=$(date +%s.%N)
    echo "exported $((lines - 1)) decisions (+ header), $bytes bytes in $(echo "$end - $start" | bc) s"
    echo "server VmRSS after export $(mem "$PID" VmRSS) MB, peak (VmHWM) $(mem "$PID" VmHWM) MB"
    ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed '$d'
    exit 2
    ;;
esac
