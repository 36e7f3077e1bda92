# Common helpers for the local stack scripts. Source it; do not run it.
# shellcheck shell=bash
set -euo pipefail

FERRY_ROOT=${FERRY_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
DEPLOY=$FERRY_ROOT/deploy/local
LOCAL=$FERRY_ROOT/.local
BIN=$LOCAL/bin
LOGS=$LOCAL/logs
DATA=$LOCAL/data
RUN=$LOCAL/run
# shellcheck source=versions.sh
. "$DEPLOY/versions.sh"

msg() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { msg "ERROR: $*"; exit 1; }

# ---- checksum lock (deploy/local/tools.sum) ----------------------------------------------------
TOOLS_SUM=${TOOLS_SUM:-$DEPLOY/tools.sum}

# verify_sha256 FILE SHA256: true when FILE's SHA-256 is SHA256; else says so and returns 1.
verify_sha256() {
  local got
  got=$(sha256sum "$1" 2>/dev/null | cut -d' ' -f1)
  [[ -n $got && $got == "$2" ]] && return 0
  msg "REFUSED $1: sha256 ${got:-unreadable}, but $TOOLS_SUM says $2"
  return 1
}

# verify_jars DIR: true when DIR holds exactly the jars of the lock, each with its locked SHA-256;
# else names every missing, changed or unlisted file and returns 1.
verify_jars() {
  local dir=$1 bad=0 kind sum file f
  local -A want=()
  while read -r kind sum file _; do
    [[ $kind == jar ]] && want[$file]=$sum
  done <"$TOOLS_SUM"
  ((${#want[@]})) || { msg "REFUSED: $TOOLS_SUM lists no jar"; return 1; }
  for file in "${!want[@]}"; do
    if [[ ! -f $dir/$file ]]; then
      msg "REFUSED $dir: $file is missing ($TOOLS_SUM lists it)"; bad=1
    else
      verify_sha256 "$dir/$file" "${want[$file]}" || bad=1
    fi
  done
  for f in "$dir"/*; do
    [[ -e $f ]] || continue
    [[ -n ${want[${f##*/}]:-} ]] || { msg "REFUSED $f: not in $TOOLS_SUM"; bad=1; }
  done
  return $bad
}

# lock_module PKG VERSION: the module of the lock's `go` line that PKG@VERSION belongs to (the
# longest matching module path); fails when there is none.
lock_module() {
  awk -v p="$1" -v v="$2" '$1 == "go" && $3 == v && (p == $2 || index(p, $2 "/") == 1) && length($2) > length(m) { m = $2 }
    END { if (m == "") exit 1; print m }' "$TOOLS_SUM"
}

# lock_h1 MODULE VERSION: the go.sum hash the lock gives MODULE@VERSION.
lock_h1() {
  awk -v m="$1" -v v="$2" '$1 == "go" && $2 == m && $3 == v { print $4; f = 1 } END { exit !f }' "$TOOLS_SUM"
}

# built_from BINARY: "MODULE VERSION HASH" of the main module a Go binary was built from.
built_from() { go version -m "$1" 2>/dev/null | awk '$1 == "mod" { print $2, $3, $4; exit }'; }

# jar_lock_lines DIR: the tools.sum lines of the jars in DIR, with coordinates from the local Maven
# repository, each jar first compared with the .sha1 Maven downloaded from Central beside it.
jar_lock_lines() {
  local f m rel ver art grp
  for f in "$1"/*.jar; do
    m=$(find "${MAVEN_REPO:-$HOME/.m2/repository}" -name "${f##*/}" -type f | head -1)
    [[ -n $m ]] || die "${f##*/}: not in the local Maven repository"
    [[ $(sha1sum <"$f" | cut -c1-40) == "$(cut -c1-40 "$m.sha1" 2>/dev/null)" ]] || die "${f##*/}: sha1 differs from Central's $m.sha1"
    rel=${m#"${MAVEN_REPO:-$HOME/.m2/repository}"/}; rel=${rel%/*}
    ver=${rel##*/}; rel=${rel%/*}; art=${rel##*/}; grp=${rel%/*}
    printf 'jar %s %s %s:%s:%s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "${f##*/}" "${grp//\//.}" "$art" "$ver"
  done
}

# tail_log FILE: the last 30 lines of a service log, for failure reports.
tail_log() {
  echo "----- last 30 lines of $1 -----" >&2
  tail -n 30 "$1" >&2 2>/dev/null || echo "(no log yet)" >&2
  echo "-----" >&2
}

# Every service we start carries FERRY_SERVICE=<this checkout's .local>:<name> in its environment
# (inherited through node.sh's exec into java), so we recognise our processes exactly: never by
# program name, never another checkout's or another engineer's instance of the same binary.
svc_tag() { echo "FERRY_SERVICE=$LOCAL:$1"; }

# pid_of NAME: prints the pid from .local/run/NAME.pid if that process is alive and is ours;
# else returns 1 (and drops a stale pid file).
pid_of() {
  local f=$RUN/$1.pid pid
  [[ -s $f ]] || return 1
  pid=$(<"$f")
  if [[ $pid =~ ^[0-9]+$ ]] && grep -qzxF "$(svc_tag "$1")" "/proc/$pid/environ" 2>/dev/null; then
    echo "$pid"; return 0
  fi
  rm -f "$f"; return 1
}

# spawn NAME LOGFILE CMD...: starts CMD detached from this session (survives make/CI shells and
# terminal hangups), stdin from /dev/null, stdout+stderr appended to LOGFILE, pid in .local/run/NAME.pid.
spawn() {
  local name=$1 log=$2; shift 2
  mkdir -p "$RUN" "$(dirname "$log")"
  printf '\n===== %s starting %s =====\n' "$(date -Is)" "$name" >>"$log"
  # The inner shell writes its own pid, then execs the service, so the pid file names the service.
  FERRY_SERVICE=$LOCAL:$name setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$RUN/$name.pid" "$@" \
    </dev/null >>"$log" 2>&1 &
  local i
  for ((i = 0; i < 50; i++)); do [[ -s $RUN/$name.pid ]] && return 0; sleep 0.1; done
  die "$name did not start (no pid file)"
}

# wait_until TIMEOUT_S NAME LOGFILE CHECK...: polls CHECK every 0.5 s until it succeeds; on timeout
# (or if the service's process dies) prints the log tail and exits non-zero.
wait_until() {
  local timeout=$1 name=$2 log=$3; shift 3
  local deadline=$((SECONDS + timeout))
  while ! "$@" >/dev/null 2>&1; do
    if ! pid_of "$name" >/dev/null; then
      msg "$name exited while starting"; tail_log "$log"; exit 1
    fi
    if ((SECONDS >= deadline)); then
      msg "$name not ready after ${timeout}s"; tail_log "$log"; exit 1
    fi
    sleep 0.5
  done
}

# stop_proc NAME [TIMEOUT_S]: SIGTERM, wait, then SIGKILL. No-op when not running.
stop_proc() {
  local name=$1 timeout=${2:-15} pid i
  pid=$(pid_of "$name") || { rm -f "$RUN/$name.pid"; return 0; }
  msg "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    msg "$name still running after ${timeout}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$RUN/$name.pid"
}

# our_pids: every live process started by these scripts for this checkout (pid file or not).
our_pids() {
  grep -lzF "FERRY_SERVICE=$LOCAL:" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | grep -vx "$$" || true
}

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# http_ok URL [EXPECTED_SUBSTRING]: GET returns 2xx (and contains the substring).
http_ok() {
  python3 - "$@" <<'PY'
import sys, urllib.request
try:
    body = urllib.request.urlopen(sys.argv[1], timeout=3).read().decode()
except Exception:
    sys.exit(1)
sys.exit(0 if len(sys.argv) < 3 or sys.argv[2] in body else 1)
PY
}

rss_of() { # rss_of PID -> "123 MiB"
  awk '/^VmRSS/ {printf "%d MiB", $2/1024}' "/proc/$1/status" 2>/dev/null || echo "?"
}

# find_java: a Java 17 `java` for Cassandra 5.0 (FERRY_JAVA if set), or die saying how to install one.
java_major() { "$1" -version 2>&1 | sed -n '1s/.*version "\([0-9]*\).*/\1/p'; }
find_java() {
  local j
  if [[ -n ${FERRY_JAVA:-} ]]; then
    [[ -x $FERRY_JAVA ]] || die "FERRY_JAVA=$FERRY_JAVA is not an executable java"
    local m; m=$(java_major "$FERRY_JAVA")
    [[ $m =~ ^[0-9]+$ ]] && ((m >= 17 && m < 24)) ||
      die "FERRY_JAVA=$FERRY_JAVA is Java ${m:-?}; Cassandra 5.0 needs Java 17 (JDK 24+ refuses its security manager).
  Install it:  apt-get install -y openjdk-17-jre-headless"
    ((m == 17)) || msg "warning: FERRY_JAVA is Java $m, only 17 is tested"
    echo "$FERRY_JAVA"; return
  fi
  for j in /usr/lib/jvm/java-17-openjdk-amd64/bin/java /usr/lib/jvm/*17*/bin/java "$(command -v java || true)"; do
    [[ -n $j && -x $j && $(java_major "$j") == 17 ]] && { echo "$j"; return; }
  done
  die "Java 17 is required for Cassandra 5.0 (newer JDKs refuse its security manager) and none was found.
  Install it:  apt-get install -y openjdk-17-jre-headless   (or set FERRY_JAVA=/path/to/java17/bin/java)"
}
