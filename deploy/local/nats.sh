#!/usr/bin/env bash
# usage: nats.sh start|stop|status -- NATS with JetStream on nats://127.0.0.1:4222 (monitor :8222).
. "$(dirname "$0")/lib.sh"
NAME=nats LOG=$LOGS/nats.log STORE=$DATA/nats
HEALTH=http://127.0.0.1:8222/healthz?js-enabled-only=true
healthy() { http_ok "$HEALTH" '"ok"'; }

case ${1:-} in
start)
  if pid=$(pid_of $NAME); then
    healthy && { msg "nats already running (pid $pid)"; exit 0; }
  else
    [[ -x $BIN/nats-server ]] || die "$BIN/nats-server missing: run make tools"
    port_open 127.0.0.1 4222 && die "port 4222 is taken by a process that is not ours: $(ss -Hltnp 'sport = :4222' 2>/dev/null)"
    mkdir -p "$STORE"
    spawn $NAME "$LOG" "$BIN/nats-server" -c "$DEPLOY/nats.conf" -sd "$STORE"
  fi
  wait_until "${NATS_TIMEOUT:-30}" $NAME "$LOG" healthy
  msg "nats ready: nats://127.0.0.1:4222 (pid $(pid_of $NAME))";;
stop) stop_proc $NAME 15;;
status)
  if pid=$(pid_of $NAME) && healthy; then echo "nats       up    pid $pid  rss $(rss_of "$pid")  nats://127.0.0.1:4222"
  elif pid=$(pid_of $NAME); then echo "nats       UNHEALTHY pid $pid"; exit 1
  else echo "nats       down"; exit 1; fi;;
*) echo "usage: $0 start|stop|status" >&2; exit 2;;
esac
