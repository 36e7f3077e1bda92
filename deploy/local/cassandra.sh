#!/usr/bin/env bash
# usage: cassandra.sh start|stop|status -- two Cassandra 5.0 nodes on Java 17:
#   cassandra-dc1: 127.0.0.1:9042 dc1 token -2^63 (JMX 127.0.0.1:7199)
#   cassandra-dc2: 127.0.0.2:9042 dc2 token 0     (JMX 127.0.0.1:7299)
# Logs: .local/logs/cassandra-dc{1,2}.log (Cassandra's whole log; no separate system.log).
# Env: FERRY_JAVA (a Java 17 java), CASS_START=sequential|parallel, CASS_TIMEOUT (s, per wait).
. "$(dirname "$0")/lib.sh"
NODES=(
  "1 127.0.0.1 dc1 -9223372036854775808 7199"
  "2 127.0.0.2 dc2 0 7299"
)
TIMEOUT=${CASS_TIMEOUT:-180}
CQLPING=$DEPLOY/cassandra/cqlping.py

launch() { # launch N IP DC TOKEN JMX
  local n=$1 ip=$2 dc=$3 name=cassandra-$3
  if pid_of "$name" >/dev/null; then return 0; fi
  port_open "$ip" 9042 && die "$ip:9042 is taken by a process that is not ours"
  port_open "$ip" 7000 && die "$ip:7000 is taken by a process that is not ours"
  msg "starting $name on $ip"
  CASS_JAVA=$JAVA FERRY_ROOT=$FERRY_ROOT spawn "$name" "$LOGS/$name.log" "$DEPLOY/cassandra/node.sh" "$@"
}
wait_cql() { wait_until "$TIMEOUT" "cassandra-$2" "$LOGS/cassandra-$2.log" port_open "$1" 9042; }
sees_peer() { python3 "$CQLPING" "$1"; }
wait_peer() { wait_until "$TIMEOUT" "cassandra-$2" "$LOGS/cassandra-$2.log" sees_peer "$1"; }

case ${1:-} in
start)
  all_ok=1
  for n in "${NODES[@]}"; do
    set -- $n
    pid_of "cassandra-$3" >/dev/null && sees_peer "$2" >/dev/null 2>&1 || all_ok=0
  done
  ((all_ok)) && { msg "cassandra already running (dc1, dc2)"; exit 0; }
  [[ -f $LOCAL/cassandra/lib/jamm-0.4.0.jar ]] || die "Cassandra jars missing: run make tools"
  JAVA=$(find_java)
  if [[ ${CASS_START:-sequential} == parallel ]]; then
    for n in "${NODES[@]}"; do launch $n; done
    for n in "${NODES[@]}"; do set -- $n; wait_cql "$2" "$3"; done
  else  # one after the other: the second node starts while the first is already serving
    for n in "${NODES[@]}"; do set -- $n; launch $n; wait_cql "$2" "$3"; done
  fi
  for n in "${NODES[@]}"; do set -- $n; wait_peer "$2" "$3"; done
  msg "cassandra ready: 127.0.0.1:9042 (dc1), 127.0.0.2:9042 (dc2), each sees the other";;
stop)
  for n in "${NODES[@]}"; do set -- $n; stop_proc "cassandra-$3" 60 & done
  wait;;
status)
  rc=0
  for n in "${NODES[@]}"; do
    set -- $n
    if ! pid=$(pid_of "cassandra-$3"); then echo "cassandra-$3 down"; rc=1
    elif ! port_open "$2" 9042; then echo "cassandra-$3 STARTING pid $pid  rss $(rss_of "$pid")  ($2:9042 not open)"; rc=1
    elif ! err=$(sees_peer "$2" 2>&1); then echo "cassandra-$3 DEGRADED pid $pid  rss $(rss_of "$pid")  $2:9042: $err"; rc=1
    else echo "cassandra-$3 up    pid $pid  rss $(rss_of "$pid")  $2:9042  peer UP"; fi
  done
  exit $rc;;
*) echo "usage: $0 start|stop|status" >&2; exit 2;;
esac
