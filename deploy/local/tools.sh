#!/usr/bin/env bash
# Installs the pinned binaries into .local/bin and Cassandra's jars into .local/cassandra/lib, each
# checked against the checksum lock deploy/local/tools.sum: a download that does not match is
# refused (and not installed), and so is a version with no line in the lock. An install is skipped
# when what is there already matches the lock, so a second run is quick and a version bump
# (versions.sh / cassandra/pom.xml, with its new lock lines) reinstalls.
. "$(dirname "$0")/lib.sh"
mkdir -p "$BIN" "$LOCAL/cassandra"
exec 9>"$LOCAL/tools.lock"; flock 9   # two `make tools` at once: the second waits

command -v go >/dev/null || die "go is not on PATH (Go 1.26 is required)"

# go_tool NAME PKG VERSION: `GOBIN=.local/bin go install PKG@VERSION` unless .local/bin/NAME was
# built from exactly the locked module (its build info names the module, version and go.sum hash).
# The module is downloaded and its hash compared with the lock before anything is built; the Go
# checksum database is consulted too, unless this environment turned it off.
go_tool() {
  local name=$1 pkg=$2 ver=$3 mod h1 got
  mod=$(lock_module "$pkg" "$ver") ||
    die "$pkg@$ver has no \`go MODULE $ver h1:…\` line in $TOOLS_SUM: add it (the module's go.sum hash, https://sum.golang.org/lookup/MODULE@$ver)"
  h1=$(lock_h1 "$mod" "$ver")
  [[ -x $BIN/$name && $(built_from "$BIN/$name") == "$mod $ver $h1" ]] && return 0
  msg "installing $pkg@$ver (go install, 1-2 min the first time)"
  local t=$SECONDS
  got=$(GOFLAGS= GOWORK=off GOINSECURE= go mod download -json "$mod@$ver" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",*$/\1/p') ||
    die "go mod download $mod@$ver failed"
  [[ $got == "$h1" ]] || die "REFUSED $mod@$ver: the download's hash is ${got:-none}, but $TOOLS_SUM says $h1"
  GOBIN=$BIN GOFLAGS= GOWORK=off GOINSECURE= go install "$pkg@$ver" || die "go install $pkg@$ver failed"
  got=$(built_from "$BIN/$name")
  if [[ $got != "$mod $ver $h1" ]]; then
    rm -f "$BIN/$name"
    die "REFUSED $BIN/$name: built from ${got:-unknown}, not $mod $ver $h1 ($TOOLS_SUM); removed"
  fi
  msg "installed $name $ver in $((SECONDS - t))s"
}

go_tool nats-server "$NATS_SERVER_PKG" "$NATS_SERVER_VERSION"
go_tool versitygw "$VERSITYGW_PKG" "$VERSITYGW_VERSION"
go_tool nats "$NATS_CLI_PKG" "$NATS_CLI_VERSION"

# Cassandra jars from Maven Central, resolved from deploy/local/cassandra/pom.xml; exactly the jars
# of the lock. The stamp names the lock's jar lines the directory was last verified against: jars
# that no longer match the lock they were verified against changed on disk, and are refused; jars
# verified against an older lock (a version bump) are downloaded again.
POM=$DEPLOY/cassandra/pom.xml
LIB=$LOCAL/cassandra/lib
CASS_VERSION=$(sed -n 's:.*<cassandra.version>\(.*\)</cassandra.version>.*:\1:p' "$POM")
grep -q "^jar [0-9a-f]* cassandra-all-$CASS_VERSION\.jar " "$TOOLS_SUM" ||
  die "cassandra/pom.xml wants cassandra-all $CASS_VERSION: $TOOLS_SUM has no line for its jar (see its header)"
want="cassandra-all $CASS_VERSION lock-sha256 $(grep '^jar ' "$TOOLS_SUM" | sha256sum | cut -d' ' -f1)"
stamp=$LOCAL/cassandra/.lib.stamp
if [[ -f $stamp && $(<"$stamp") == "$want" && -d $LIB ]]; then
  verify_jars "$LIB" || die "the jars in $LIB changed since they were verified: delete $LIB and run make tools again"
elif [[ -d $LIB ]] && verify_jars "$LIB" 2>/dev/null; then
  echo "$want" >"$stamp"   # downloaded earlier (by hand, or an older tools.sh): exactly the locked jars
else
  command -v mvn >/dev/null || die "mvn is not on PATH (Maven is needed once to fetch Cassandra's jars)"
  msg "downloading cassandra-all $CASS_VERSION and its dependencies (Maven Central)"
  rm -rf "$LIB.tmp"
  # --strict-checksums: Maven itself refuses a file that does not match Central's .sha1 (this also
  # covers the dependency plugin's own jars, which the lock does not list).
  (cd "$FERRY_ROOT" && mvn -B -q --strict-checksums -f "$POM" \
      org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
      -DoutputDirectory="$LIB.tmp" -DincludeScope=runtime) || die "mvn copy-dependencies failed"
  if ! verify_jars "$LIB.tmp"; then
    rm -rf "$LIB.tmp"
    die "the downloaded jars do not match $TOOLS_SUM: refused, nothing installed"
  fi
  rm -rf "$LIB"; mv "$LIB.tmp" "$LIB"
  echo "$want" >"$stamp"
fi
msg "tools ok: nats-server $NATS_SERVER_VERSION, versitygw $VERSITYGW_VERSION, nats $NATS_CLI_VERSION, cassandra $CASS_VERSION"
