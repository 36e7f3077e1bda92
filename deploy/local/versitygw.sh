#!/usr/bin/env bash
# usage: versitygw.sh start|stop|status -- S3 (versitygw, posix backend) on http://127.0.0.1:7070,
# path-style, region us-east-1, key ferrylocal/ferrylocalsecret, buckets ferry-demo and ferry-test.
. "$(dirname "$0")/lib.sh"
NAME=versitygw LOG=$LOGS/versitygw.log ROOTDIR=$DATA/s3 SIDECAR=$DATA/s3-meta
ADDR=127.0.0.1:7070 ACCESS=ferrylocal SECRET=ferrylocalsecret
BUCKETS=(ferry-demo ferry-test)

# s3 METHOD PATH [EXPECT...]: one SigV4-signed request (python3 stdlib only, no curl/aws CLI needed);
# succeeds on 2xx or when the response body contains one of the EXPECT strings.
s3() {
  python3 - "$ADDR" "$ACCESS" "$SECRET" "$@" <<'PY'
import datetime, hashlib, hmac, sys, urllib.request, urllib.error
addr, ak, sk, method, path, *expect = sys.argv[1:]
now = datetime.datetime.now(datetime.timezone.utc)
amzdate, day = now.strftime('%Y%m%dT%H%M%SZ'), now.strftime('%Y%m%d')
payload = hashlib.sha256(b'').hexdigest()
canon = f"{method}\n{path}\n\nhost:{addr}\nx-amz-content-sha256:{payload}\nx-amz-date:{amzdate}\n\nhost;x-amz-content-sha256;x-amz-date\n{payload}"
scope = f"{day}/us-east-1/s3/aws4_request"
sts = f"AWS4-HMAC-SHA256\n{amzdate}\n{scope}\n{hashlib.sha256(canon.encode()).hexdigest()}"
k = ('AWS4' + sk).encode()
for part in (day, 'us-east-1', 's3', 'aws4_request'):
    k = hmac.new(k, part.encode(), hashlib.sha256).digest()
sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
req = urllib.request.Request(f"http://{addr}{path}", method=method, headers={
    'x-amz-date': amzdate, 'x-amz-content-sha256': payload,
    'Authorization': f"AWS4-HMAC-SHA256 Credential={ak}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={sig}"})
try:
    body = urllib.request.urlopen(req, timeout=5).read().decode()
    ok = all(e in body for e in expect) if method == 'GET' else True
except urllib.error.HTTPError as e:
    body = e.read().decode(); ok = method != 'GET' and any(x in body for x in expect)
except Exception as e:
    body, ok = str(e), False
if not ok: print(body, file=sys.stderr)
sys.exit(0 if ok else 1)
PY
}
listening() { port_open 127.0.0.1 7070; }
healthy() { s3 GET / "${BUCKETS[@]/#/<Name>}"; }   # bucket list answers and holds our buckets

case ${1:-} in
start)
  if pid=$(pid_of $NAME); then
    healthy && { msg "versitygw already running (pid $pid)"; exit 0; }
  else
    [[ -x $BIN/versitygw ]] || die "$BIN/versitygw missing: run make tools"
    listening && die "port 7070 is taken by a process that is not ours: $(ss -Hltnp 'sport = :7070' 2>/dev/null)"
    mkdir -p "$ROOTDIR"
    posix=(posix)
    # The posix backend keeps object metadata in user xattrs; fall back to a sidecar folder if the
    # filesystem refuses them (e.g. some tmpfs/overlay setups).
    if ! python3 -c 'import os,sys; os.setxattr(sys.argv[1], "user.ferry_probe", b"1"); os.removexattr(sys.argv[1], "user.ferry_probe")' "$ROOTDIR" 2>/dev/null; then
      msg "no user xattrs on $ROOTDIR: using --sidecar $SIDECAR"
      mkdir -p "$SIDECAR"; posix+=(--sidecar "$SIDECAR")
    fi
    spawn $NAME "$LOG" "$BIN/versitygw" --access "$ACCESS" --secret "$SECRET" --port "$ADDR" \
      --keep-alive --quiet "${posix[@]}" "$ROOTDIR"
  fi
  wait_until "${VGW_TIMEOUT:-30}" $NAME "$LOG" listening
  for b in "${BUCKETS[@]}"; do   # idempotent: "already owned by you" counts as success
    s3 PUT "/$b" BucketAlreadyOwnedByYou BucketAlreadyExists || { tail_log "$LOG"; die "cannot create bucket $b"; }
  done
  wait_until 10 $NAME "$LOG" healthy
  msg "versitygw ready: http://$ADDR buckets ${BUCKETS[*]} (pid $(pid_of $NAME))";;
stop) stop_proc $NAME 15;;
status)
  if pid=$(pid_of $NAME) && healthy; then echo "versitygw  up    pid $pid  rss $(rss_of "$pid")  http://$ADDR (${BUCKETS[*]})"
  elif pid=$(pid_of $NAME); then echo "versitygw  UNHEALTHY pid $pid"; exit 1
  else echo "versitygw  down"; exit 1; fi;;
*) echo "usage: $0 start|stop|status" >&2; exit 2;;
esac
