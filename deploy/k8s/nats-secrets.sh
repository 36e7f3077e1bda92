#!/usr/bin/env bash
# nats-secrets.sh JOB DIR: makes a fresh set of the NATS identities of deploy/nats/secure.conf for
# the job JOB (ferry-env's FERRY_JOB) and writes them into DIR (new, readable by you only) as
# Kubernetes Secret manifests:
#
#   DIR/nats-ferry-auth.yaml   namespace nats: auth.conf, secure.conf's accounts and per-service
#                              permissions for JOB, with each identity's public NKEY or bcrypt hash.
#                              deploy/k8s/nats-values.yaml includes it into the NATS config.
#   DIR/ferry-nats-ID.yaml     namespace ferry, one per identity of secure.conf (admin, producer,
#                              fetcher, uploader, verifier, advisor, manifest): key `nkey`, its NKEY seed, or key
#                              `password` for a user with a password (admin). Each ferry workload
#                              mounts only its own; the setup Job alone ferry-nats-admin.
#
# Then `kubectl apply -f DIR`, and delete DIR or keep it where secrets belong: the seeds and
# passwords are in it (base64, not encrypted). Running it again makes new keys for every identity:
# apply them, and restart ferry's pods. Placeholders in secure.conf follow the pattern ID_NKEY (an
# NKEY user) or ID_BCRYPT_HASH (a password user); a new identity there gets its Secret here.
#
# Needs the nats CLI (`make tools` installs it in .local/bin; NATS_CLI=path to choose another).
set -euo pipefail

die() { echo "nats-secrets.sh: $*" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
[[ $# == 2 ]] || { echo "usage: $0 JOB DIR" >&2; exit 2; }
job=$1 out=$2
[[ $job =~ ^[A-Za-z0-9_-]+$ ]] || { echo "JOB $job: letters, digits, _ and - only" >&2; exit 2; }
conf=${SECURE_CONF:-$root/deploy/nats/secure.conf}
nats=${NATS_CLI:-}
if [[ -z $nats ]]; then
  if [[ -x $root/.local/bin/nats ]]; then nats=$root/.local/bin/nats
  else nats=$(command -v nats) || die "no nats CLI: run make tools, or set NATS_CLI"; fi
fi
if [[ -e $out ]] && [[ -n $(ls -A "$out") ]]; then die "$out is not empty: give a new directory"; fi

umask 077
mkdir -p "$out"
chmod 700 "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# secure.conf's accounts block, written for the job "photos".
auth=$(sed -n '/^accounts {/,/^}/p' "$conf")
[[ -n $auth ]] || die "$conf: no top-level accounts { … } block"
auth=${auth//photos/"$job"}

# secret NAMESPACE NAME KEY FILE: DIR/NAME.yaml, a Secret with FILE's content under KEY.
secret() {
  printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\n  labels:\n    app.kubernetes.io/part-of: ferry\ntype: Opaque\ndata:\n  %s: %s\n' \
    "$2" "$1" "$3" "$(base64 -w0 <"$4")" >"$out/$2.yaml"
}
lower() { tr '[:upper:]' '[:lower:]' <<<"$1"; }

made=()
for ph in $(grep -oE '\b[A-Z][A-Z0-9]*_NKEY\b' <<<"$auth" | sort -u); do
  id=$(lower "${ph%_NKEY}")
  "$nats" auth nkey gen user --output "$work/$id.nk" >/dev/null || die "nats auth nkey gen failed"
  pub=$("$nats" auth nkey show "$work/$id.nk")
  [[ $pub =~ ^U[A-Z2-7]{55}$ ]] || die "nats auth nkey show: not a user public key"
  auth=${auth//"$ph"/"$pub"}
  secret ferry "ferry-nats-$id" nkey "$work/$id.nk"
  made+=("ferry-nats-$id (nkey)")
done
for ph in $(grep -oE '\b[A-Z][A-Z0-9]*_BCRYPT_HASH\b' <<<"$auth" | sort -u); do
  id=$(lower "${ph%_BCRYPT_HASH}")
  pw=$(head -c 64 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9' | head -c 40)
  [[ ${#pw} == 40 ]] || die "could not make a password"
  printf '%s\n' "$pw" >"$work/$id.pw"
  hash=$(PASSWORD=$pw "$nats" server passwd 2>&1 </dev/null) # from the environment: not in ps
  [[ $hash =~ ^\$2[aby]?\$[0-9]{2}\$[./A-Za-z0-9]{53}$ ]] || die "nats server passwd: no bcrypt hash"
  auth=${auth//"$ph"/"$hash"}
  secret ferry "ferry-nats-$id" password "$work/$id.pw"
  made+=("ferry-nats-$id (password)")
done
((${#made[@]})) || die "$conf: no ID_NKEY or ID_BCRYPT_HASH placeholder in its accounts"
if grep -qE '_NKEY\b|_BCRYPT_HASH\b' <<<"$auth"; then die "placeholders left in auth.conf"; fi

printf '%s\n' "$auth" >"$work/auth.conf"
secret nats nats-ferry-auth auth.conf "$work/auth.conf"

cat >&2 <<EOF
nats-secrets.sh: job $job, in $out:
  nats/nats-ferry-auth (auth.conf: the accounts and users of $(basename "$conf"))
$(printf '  ferry/%s\n' "${made[@]}")
Apply with: kubectl apply -f $out   (namespaces nats and ferry must exist), then delete $out
or keep it as a secret.
EOF
