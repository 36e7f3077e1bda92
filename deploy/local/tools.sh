#!/usr/bin/env bash
# Installs the pinned binaries into .local/bin and Cassandra's jars into .local/cassandra/lib.
# Each install is skipped when its stamp file matches the wanted version, so a second run is instant
# and a version bump (versions.sh / cassandra/pom.xml) reinstalls.
. "$(dirname "$0")/lib.sh"
mkdir -p "$BIN" "$LOCAL/cassandra"
exec 9>"$LOCAL/tools.lock"; flock 9   # two `make tools` at once: the second waits

command -v go >/dev/null || die "go is not on PATH (Go 1.26 is required)"

# go_tool NAME PKG VERSION: `GOBIN=.local/bin go install PKG@VERSION` unless already installed.
go_tool() {
  local name=$1 pkg=$2 ver=$3 want stamp=$BIN/.$1.version
  want="$pkg@$ver"
  if [[ -x $BIN/$name ]]; then
    [[ -f $stamp && $(<"$stamp") == "$want" ]] && return 0
    # Installed without a stamp (by hand): adopt it if the build info shows the wanted version.
    if go version -m "$BIN/$name" 2>/dev/null | awk '$1=="mod"{print $3; exit}' | grep -qx -- "$ver"; then
      echo "$want" >"$stamp"; return 0
    fi
  fi
  msg "installing $want (go install, 1-2 min the first time)"
  local t=$SECONDS
  GOBIN=$BIN GOFLAGS= GOWORK=off go install "$want" || die "go install $want failed"
  echo "$want" >"$stamp"
  msg "installed $name $ver in $((SECONDS - t))s"
}

go_tool nats-server "$NATS_SERVER_PKG" "$NATS_SERVER_VERSION"
go_tool versitygw "$VERSITYGW_PKG" "$VERSITYGW_VERSION"
go_tool nats "$NATS_CLI_PKG" "$NATS_CLI_VERSION"

# Cassandra jars from Maven Central, resolved from deploy/local/cassandra/pom.xml.
POM=$DEPLOY/cassandra/pom.xml
LIB=$LOCAL/cassandra/lib
CASS_VERSION=$(sed -n 's:.*<cassandra.version>\(.*\)</cassandra.version>.*:\1:p' "$POM")
want="cassandra-all $CASS_VERSION pom-sha256 $(sha256sum "$POM" | cut -d' ' -f1)"
stamp=$LOCAL/cassandra/.lib.stamp
if [[ -f $stamp && $(<"$stamp") == "$want" && -f $LIB/cassandra-all-$CASS_VERSION.jar ]]; then
  :
elif [[ ! -f $stamp && -f $LIB/cassandra-all-$CASS_VERSION.jar && $(ls "$LIB" | wc -l) -gt 50 ]]; then
  echo "$want" >"$stamp"   # downloaded earlier by hand with the same command: adopt it
else
  command -v mvn >/dev/null || die "mvn is not on PATH (Maven is needed once to fetch Cassandra's jars)"
  msg "downloading cassandra-all $CASS_VERSION and its dependencies (Maven Central)"
  rm -rf "$LIB.tmp"
  (cd "$FERRY_ROOT" && mvn -B -q -f "$POM" \
      org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
      -DoutputDirectory="$LIB.tmp" -DincludeScope=runtime) || die "mvn copy-dependencies failed"
  [[ -f $LIB.tmp/cassandra-all-$CASS_VERSION.jar ]] || die "cassandra-all-$CASS_VERSION.jar not downloaded"
  rm -rf "$LIB"; mv "$LIB.tmp" "$LIB"
  echo "$want" >"$stamp"
fi
msg "tools ok: nats-server $NATS_SERVER_VERSION, versitygw $VERSITYGW_VERSION, nats $NATS_CLI_VERSION, cassandra $CASS_VERSION"
