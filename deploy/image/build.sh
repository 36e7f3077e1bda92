#!/usr/bin/env bash
# Builds the container image localhost/ferry:dev (IMAGE=... to change) with podman, FROM scratch:
# nothing is pulled. Installs podman and runc with apt-get when missing, writes the containers.conf
# this machine needs into .local/podman/, assembles the build context in .local/image/ and runs
# `podman build`. A re-run with unchanged sources only rebuilds the (cached) binary and compares it.
# Run podman yourself with the same settings: CONTAINERS_CONF=.local/podman/containers.conf.
. "$(dirname "$0")/../local/lib.sh"

IMAGE=${IMAGE:-localhost/ferry:dev}
PODMAN_DIR=$LOCAL/podman
CTX=$LOCAL/image
SRC=$FERRY_ROOT/deploy/image

# No Docker engine, cgroups v1/hybrid, no RLIMIT_NOFILE raise allowed: runc with cgroupfs, no default
# ulimits. The file is only ours, used through CONTAINERS_CONF; /etc/containers is left alone.
podman_env() {
  mkdir -p "$PODMAN_DIR"
  local conf=$PODMAN_DIR/containers.conf
  local want='# written by deploy/image/build.sh; use with CONTAINERS_CONF=<this file>
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
'
  [[ -f $conf && $(<"$conf")$'\n' == "$want" ]] || printf '%s' "$want" >"$conf"
  export CONTAINERS_CONF=$conf
}

install_podman() {
  command -v podman >/dev/null && [[ -x /usr/sbin/runc || -x /usr/bin/runc ]] && return 0
  local sudo=; [[ $(id -u) == 0 ]] || sudo=sudo
  msg "installing podman and runc (apt-get, once)"
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null \
    || die "apt-get install podman runc failed"
}

exec 8>"$LOCAL/image.lock"; flock 8   # two builds at once: the second waits, then finds it done
install_podman
podman_env

# The context: the static binary, rootfs/ (CA bundle, passwd/group, an empty /tmp) and data/.
mkdir -p "$CTX/rootfs/etc/ssl/certs" "$CTX/rootfs/tmp" "$CTX/data"
chmod 1777 "$CTX/rootfs/tmp"
chmod 0755 "$CTX/data"
VERSION=$(git -C "$FERRY_ROOT" describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION=$(git -C "$FERRY_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
CREATED=$(git -C "$FERRY_ROOT" log -1 --format=%cI 2>/dev/null || echo 1970-01-01T00:00:00Z)
(cd "$FERRY_ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$VERSION -X main.commit=$(git -C "$FERRY_ROOT" rev-parse --short=12 HEAD 2>/dev/null) -X main.date=$(git -C "$FERRY_ROOT" log -1 --format=%cI 2>/dev/null)" -o "$CTX/ferry.new" .) \
  || die "go build failed"
mv -f "$CTX/ferry.new" "$CTX/ferry"
CA=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[[ -s $CA ]] || die "no CA bundle at $CA (apt-get install ca-certificates, or CA_BUNDLE=FILE)"
put() { cmp -s "$1" "$2" || install -m 0644 "$1" "$2"; }   # unchanged files keep their mtime
put "$CA" "$CTX/rootfs/etc/ssl/certs/ca-certificates.crt"
put "$SRC/passwd" "$CTX/rootfs/etc/passwd"
put "$SRC/group" "$CTX/rootfs/etc/group"
put "$SRC/Containerfile" "$CTX/Containerfile"

# Skip podman when the context and the labels are what the existing image was built from.
stamp=$CTX/.stamp
want="$IMAGE $VERSION $REVISION $CREATED $(cd "$CTX" && find . -path ./.stamp -prune -o -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
if [[ -f $stamp && $(<"$stamp") == "$want" ]] && podman image exists "$IMAGE"; then
  msg "image $IMAGE up to date ($VERSION)"
  exit 0
fi
t=$SECONDS
old=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
# --layers=false: one image, no intermediate ones piling up (the stamp above is the cache).
podman build --pull=never --layers=false -q -f "$CTX/Containerfile" -t "$IMAGE" \
  --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" --build-arg CREATED="$CREATED" \
  "$CTX" >/dev/null || die "podman build failed"
# The image this one replaces is now untagged: remove it (kept if a container still uses it).
new=$(podman image inspect --format '{{.Id}}' "$IMAGE")
[[ -z $old || $old == "$new" ]] || podman rmi "$old" >/dev/null 2>&1 || true
echo "$want" >"$stamp"
msg "built $IMAGE ($VERSION, $(du -h "$CTX/ferry" | cut -f1) binary) in $((SECONDS - t))s"
