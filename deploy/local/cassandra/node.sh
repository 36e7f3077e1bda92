#!/usr/bin/env bash
# Runs one Cassandra 5.0 node in the foreground from the Maven Central jars (no tarball, no bin/cassandra).
# usage: node.sh N IP DC TOKEN JMXPORT     e.g. node.sh 1 127.0.0.1 dc1 -9223372036854775808 7199
# Env: FERRY_ROOT (checkout), CASS_JAVA (a Java 17 `java`, chosen by deploy/local/cassandra.sh),
#      CASS_HEAP (default 1G). Node folder: .local/data/cassandra/nodeN/{conf,data,commitlog,...}.
#      A separate cluster (deploy/local/cassandra-secure.sh) also sets CASS_DATA (the folder holding
#      nodeN), CASS_CLUSTER, CASS_SEEDS, CASS_AUTHENTICATOR, CASS_AUTHORIZER and CASS_YAML_EXTRA (a
#      file appended to cassandra.yaml); unset, they give the main stack's two nodes.
set -euo pipefail
N=$1 IP=$2 DC=$3 TOKEN=$4 JMX=$5
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=${FERRY_ROOT:-$(cd "$HERE/../../.." && pwd)}
LIB=$ROOT/.local/cassandra/lib
D=${CASS_DATA:-$ROOT/.local/data/cassandra}/node$N
JAVA=${CASS_JAVA:?set CASS_JAVA to a Java 17 java binary}   # never JDK 24+: it refuses the security manager
HEAP=${CASS_HEAP:-1G}
[[ -f $LIB/jamm-0.4.0.jar ]] || { echo "no Cassandra jars in $LIB: run make tools" >&2; exit 1; }
mkdir -p "$D/conf" "$D/data" "$D/commitlog" "$D/saved_caches" "$D/hints" "$D/cdc_raw" "$D/logs" "$D/tmp" "$D/triggers"
sed -e "s|@IP@|$IP|g" -e "s|@TOKEN@|$TOKEN|g" -e "s|@DIR@|$D|g" -e "s|@CLUSTER@|${CASS_CLUSTER:-ferry-local}|g" \
  -e "s|@SEEDS@|${CASS_SEEDS:-127.0.0.1:7000,127.0.0.2:7000}|g" \
  -e "s|@AUTHENTICATOR@|${CASS_AUTHENTICATOR:-AllowAllAuthenticator}|g" \
  -e "s|@AUTHORIZER@|${CASS_AUTHORIZER:-AllowAllAuthorizer}|g" "$HERE/cassandra.yaml.tmpl" >"$D/conf/cassandra.yaml"
if [[ -n ${CASS_YAML_EXTRA:-} ]]; then
  chmod 600 "$D/conf/cassandra.yaml"   # the extra settings may hold a keystore password
  cat "$CASS_YAML_EXTRA" >>"$D/conf/cassandra.yaml"
fi
printf 'dc=%s\nrack=rack1\n' "$DC" >"$D/conf/cassandra-rackdc.properties"
cp "$HERE/logback.xml" "$D/conf/logback.xml"
ulimit -n 100000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
extra=()
major=$("$JAVA" -version 2>&1 | sed -n '1s/.*version "\([0-9]*\).*/\1/p')
((major >= 18)) && extra+=(-Djava.security.manager=allow)   # Java 21 (not tested) needs this

exec "$JAVA" -Xms"$HEAP" -Xmx"$HEAP" -Xss256k -XX:+UseG1GC -XX:+ParallelRefProcEnabled \
  -XX:MaxTenuringThreshold=1 -XX:+ExitOnOutOfMemoryError -XX:+PerfDisableSharedMem \
  -XX:ErrorFile="$D/logs/hs_err_%p.log" \
  -ea -da:net.openhft... -Djava.net.preferIPv4Stack=true -Dchronicle.analytics.disable=true \
  -Djdk.attach.allowAttachSelf=true -Djava.io.tmpdir="$D/tmp" \
  --add-exports java.base/jdk.internal.misc=ALL-UNNAMED \
  --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED \
  --add-exports java.management/com.sun.jmx.remote.security=ALL-UNNAMED \
  --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED \
  --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED \
  --add-exports java.sql/java.sql=ALL-UNNAMED \
  --add-exports java.base/java.lang.ref=ALL-UNNAMED \
  --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED \
  --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED \
  --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED \
  --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED \
  --add-opens java.base/java.lang.module=ALL-UNNAMED \
  --add-opens java.base/jdk.internal.loader=ALL-UNNAMED \
  --add-opens java.base/jdk.internal.ref=ALL-UNNAMED \
  --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED \
  --add-opens java.base/jdk.internal.math=ALL-UNNAMED \
  --add-opens java.base/jdk.internal.module=ALL-UNNAMED \
  --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED \
  --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED \
  --add-opens java.base/sun.nio.ch=ALL-UNNAMED \
  --add-opens java.base/java.io=ALL-UNNAMED \
  --add-opens java.base/java.lang.reflect=ALL-UNNAMED \
  --add-opens java.base/java.lang=ALL-UNNAMED \
  --add-opens java.base/java.util=ALL-UNNAMED \
  --add-opens java.base/java.nio=ALL-UNNAMED \
  -Dio.netty.tryReflectionSetAccessible=true -Dio.netty.allocator.useCacheForAllThreads=true \
  -Dio.netty.allocator.maxOrder=11 \
  -javaagent:"$LIB/jamm-0.4.0.jar" \
  "${extra[@]}" \
  -Dcassandra-foreground=yes \
  -Dcassandra.config="file://$D/conf/cassandra.yaml" \
  -Dcassandra-rackdc.properties="file://$D/conf/cassandra-rackdc.properties" \
  -Dcassandra.storagedir="$D" -Dcassandra.logdir="$D/logs" -Dcassandra.triggers_dir="$D/triggers" \
  -Dlogback.configurationFile="$D/conf/logback.xml" \
  -Dcassandra.jmx.local.port="$JMX" -Dcom.sun.management.jmxremote.authenticate=false \
  -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.ring_delay_ms=1000 \
  -Dcassandra.superuser_setup_delay_ms=0 -Dcassandra.skip_sync=true \
  -cp "$LIB/*" org.apache.cassandra.service.CassandraDaemon
