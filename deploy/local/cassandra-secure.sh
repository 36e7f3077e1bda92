#!/usr/bin/env bash
# usage: cassandra-secure.sh start|stop|status -- a single-node Cassandra 5.0 for the security tests
# only (e2e/cassandra_security_test.go); the main stack's two nodes are not touched:
#   cassandra-secure: 127.0.0.3:9042 (TLS required), storage 127.0.0.3:7000, JMX 127.0.0.1:7399,
#   cluster ferry-secure, dc secure1, PasswordAuthenticator + CassandraAuthorizer.
# Files in .local/data/cassandra-secure (made once, kept across restarts; 0600):
#   ca.pem          the node's self-signed certificate (IP SAN 127.0.0.3): a client's tls.ca_file
#   ferry.password  the password of role ferry (LOGIN, SELECT on keyspace ferry_secure)
#   keystore.p12, keystore.password, extra.yaml (client_encryption_options), node1/ (the node)
# The superuser is Cassandra's default cassandra/cassandra. Log: .local/logs/cassandra-secure.log.
# Env: FERRY_JAVA (a Java 17 java), CASS_TIMEOUT (s, per wait), CASS_SECURE_HEAP (default 512M).
. "$(dirname "$0")/lib.sh"
NAME=cassandra-secure IP=127.0.0.3 DC=secure1 JMX=7399 KEYSPACE=ferry_secure
SD=$DATA/cassandra-secure
LOG=$LOGS/$NAME.log
TIMEOUT=${CASS_TIMEOUT:-180}
CQLPING=$DEPLOY/cassandra/cqlping.py

# cql [QUERY]: cqlping over TLS as the superuser; QUERY "-" (or none) reads statements from stdin.
cql() { CQLPING_CA=$SD/ca.pem CQLPING_USER=cassandra CQLPING_PASSWORD=cassandra python3 "$CQLPING" "$IP" "${1:--}" ONE; }
superuser_ok() { cql "SELECT release_version FROM system.local"; }
ferry_ok() {
  CQLPING_CA=$SD/ca.pem CQLPING_USER=ferry CQLPING_PASSWORD=$(<"$SD/ferry.password") \
    python3 "$CQLPING" "$IP" "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = '$KEYSPACE'" ONE |
    grep -qx "$KEYSPACE"
}
secret() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }

# make_files: passwords, then the keystore with a self-signed certificate for 127.0.0.3 (keytool of
# the node's JDK; passwords from the environment, never on a command line), exported as PEM.
make_files() {
  local keytool
  keytool=$(dirname "$JAVA")/keytool
  [[ -x $keytool ]] || die "no keytool beside $JAVA"
  mkdir -p "$SD" && chmod 700 "$SD"
  (
    umask 077
    [[ -s $SD/ferry.password ]] || secret >"$SD/ferry.password"
    [[ -s $SD/keystore.password ]] || secret >"$SD/keystore.password"
    if [[ ! -s $SD/keystore.p12 || ! -s $SD/ca.pem ]]; then
      rm -f "$SD/keystore.p12" "$SD/ca.pem"
      KSPW=$(<"$SD/keystore.password") "$keytool" -genkeypair -alias node -keyalg RSA -keysize 2048 \
        -dname "CN=ferry cassandra-secure" -ext "SAN=ip:$IP" -validity 3650 -storetype PKCS12 \
        -keystore "$SD/keystore.p12" -storepass:env KSPW -keypass:env KSPW >/dev/null 2>&1 ||
        die "keytool -genkeypair failed"
      KSPW=$(<"$SD/keystore.password") "$keytool" -exportcert -rfc -alias node -keystore "$SD/keystore.p12" \
        -storepass:env KSPW -file "$SD/ca.pem" >/dev/null 2>&1 || die "keytool -exportcert failed"
    fi
    cat >"$SD/extra.yaml" <<EOF

# cassandra-secure.sh: TLS required on the CQL port (optional: false), no client certificate asked
client_encryption_options:
  enabled: true
  optional: false
  keystore: $SD/keystore.p12
  keystore_password: $(<"$SD/keystore.password")
  store_type: PKCS12
  require_client_auth: false
EOF
  )
}

# setup: the keyspace and role ferry, as the superuser; the password is set again if ferry.password
# no longer opens it (the file made anew over an old data folder).
setup() {
  cql - <<EOF
CREATE KEYSPACE IF NOT EXISTS $KEYSPACE WITH replication = {'class': 'NetworkTopologyStrategy', '$DC': 1}
CREATE ROLE IF NOT EXISTS ferry WITH PASSWORD = '$(<"$SD/ferry.password")' AND LOGIN = true
GRANT SELECT ON KEYSPACE $KEYSPACE TO ferry
EOF
  ferry_ok >/dev/null 2>&1 || cql - <<EOF
ALTER ROLE ferry WITH PASSWORD = '$(<"$SD/ferry.password")' AND LOGIN = true
EOF
}

case ${1:-} in
start)
  if pid_of "$NAME" >/dev/null && [[ -s $SD/ferry.password ]] && ferry_ok >/dev/null 2>&1; then
    msg "$NAME already running ($IP:9042, TLS, role ferry)"; exit 0
  fi
  [[ -f $LOCAL/cassandra/lib/jamm-0.4.0.jar ]] || die "Cassandra jars missing: run make tools"
  JAVA=$(find_java)
  make_files
  if ! pid_of "$NAME" >/dev/null; then
    port_open "$IP" 9042 && die "$IP:9042 is taken by a process that is not ours"
    port_open "$IP" 7000 && die "$IP:7000 is taken by a process that is not ours"
    msg "starting $NAME on $IP"
    CASS_JAVA=$JAVA FERRY_ROOT=$FERRY_ROOT CASS_HEAP=${CASS_SECURE_HEAP:-512M} CASS_DATA=$SD \
      CASS_CLUSTER=ferry-secure CASS_SEEDS=$IP:7000 CASS_AUTHENTICATOR=PasswordAuthenticator \
      CASS_AUTHORIZER=CassandraAuthorizer CASS_YAML_EXTRA=$SD/extra.yaml \
      spawn "$NAME" "$LOG" "$DEPLOY/cassandra/node.sh" 1 "$IP" "$DC" 0 "$JMX"
  fi
  wait_until "$TIMEOUT" "$NAME" "$LOG" port_open "$IP" 9042
  wait_until "$TIMEOUT" "$NAME" "$LOG" superuser_ok   # the default superuser is made just after start
  setup >/dev/null || die "creating keyspace $KEYSPACE and role ferry failed"
  wait_until 30 "$NAME" "$LOG" ferry_ok
  msg "$NAME ready: $IP:9042 (TLS required, tls.ca_file $SD/ca.pem), role ferry (password_file $SD/ferry.password)";;
stop)
  stop_proc "$NAME" 60;;
status)
  if ! pid=$(pid_of "$NAME"); then echo "$NAME down"; exit 1
  elif ! port_open "$IP" 9042; then echo "$NAME STARTING pid $pid  rss $(rss_of "$pid")  ($IP:9042 not open)"; exit 1
  elif ! err=$(ferry_ok 2>&1); then echo "$NAME DEGRADED pid $pid  rss $(rss_of "$pid")  $IP:9042: ${err:-role ferry cannot see $KEYSPACE}"; exit 1
  else echo "$NAME up    pid $pid  rss $(rss_of "$pid")  $IP:9042  TLS, role ferry"; fi;;
*) echo "usage: $0 start|stop|status" >&2; exit 2;;
esac
