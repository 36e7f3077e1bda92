#!/usr/bin/env bash
# make demo: seed blobs into the local Cassandra, migrate them with `ferry run`, print the result.
# usage: demo.sh [KEYS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=env.sh
. "$ROOT/deploy/local/env.sh"
KEYS=${1:-5000}
WORK=$ROOT/.local/demo
mkdir -p "$WORK"
export FERRY_JOB=demo

echo "== seeding $KEYS blobs (plus 10 only in the fallback table, 10 absent, and a 0 B, a 1.5 MB and a 17 MB blob)"
ferry seed --count "$KEYS" --absent 10 --fallback 10 --sizes 0,1500000,17825792 --keys-out "$WORK/keys.txt"

echo "== a fresh job '$FERRY_JOB' on the local nats-server (watch: nats stream info FERRY_demo_KEYS)"
ferry setup --delete --yes >/dev/null
ferry --nats "$FERRY_NATS" run --keys "$WORK/keys.txt"

echo "== the 10 absent keys are dead letters, as they should be:"
ferry dlq ls
