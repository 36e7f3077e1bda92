#!/usr/bin/env bash
# usage: stack.sh up|down|status|logs|clean-data -- the whole local stack (see the Makefile).
. "$(dirname "$0")/lib.sh"
SERVICES=(nats versitygw cassandra)

case ${1:-} in
up)
  mkdir -p "$LOGS" "$DATA" "$RUN"
  t0=$SECONDS
  # Cassandra is the slow one: let it boot while NATS and versitygw start.
  bash "$DEPLOY/cassandra.sh" start & cpid=$!
  bash "$DEPLOY/nats.sh" start || { wait $cpid; exit 1; }
  bash "$DEPLOY/versitygw.sh" start || { wait $cpid; exit 1; }
  wait $cpid || exit 1
  msg "stack up in $((SECONDS - t0))s (source deploy/local/env.sh for the client settings)";;
down)
  for s in "${SERVICES[@]}"; do bash "$DEPLOY/$s.sh" stop & done
  wait
  # Anything of ours that lost its pid file (found by its FERRY_SERVICE tag, see lib.sh).
  strays=$(our_pids)
  for p in $strays; do msg "stopping stray pid $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-80)"; kill -TERM "$p" 2>/dev/null || true; done
  for p in $strays; do
    for ((i = 0; i < 600; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  msg "stack down (data kept in $DATA; make clean-data wipes it)";;
status)
  rc=0
  for s in "${SERVICES[@]}"; do bash "$DEPLOY/$s.sh" status || rc=1; done
  exit $rc;;
logs)
  echo "logs (.local/logs):"
  for f in nats versitygw cassandra-dc1 cassandra-dc2; do
    printf '  %-14s %s\n' "$f" "$LOGS/$f.log"
  done
  echo "data: $DATA/{nats,s3,cassandra/node1,cassandra/node2}  pids: $RUN"
  echo "cassandra node configs: $DATA/cassandra/node{1,2}/conf/cassandra.yaml";;
clean-data)
  "$0" down
  rm -rf "$DATA" "$LOGS"
  msg "wiped $DATA and $LOGS";;
*) echo "usage: $0 up|down|status|logs|clean-data" >&2; exit 2;;
esac
