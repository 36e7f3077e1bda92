# Client settings for the local stack:  . deploy/local/env.sh   (bash or zsh)
if [ -n "${BASH_SOURCE:-}" ]; then _ferry_here=${BASH_SOURCE[0]}; else _ferry_here=${(%):-%x}; fi
FERRY_ROOT=$(cd "$(dirname "$_ferry_here")/../.." && pwd)
unset _ferry_here
export FERRY_ROOT
export FERRY_NATS=nats://127.0.0.1:4222
export AWS_ACCESS_KEY_ID=ferrylocal
export AWS_SECRET_ACCESS_KEY=ferrylocalsecret
export AWS_REGION=us-east-1
export FERRY_CONFIG=$FERRY_ROOT/deploy/local/ferry.yaml
case ":$PATH:" in *":$FERRY_ROOT/.local/bin:"*) ;; *) export PATH=$FERRY_ROOT/.local/bin:$PATH ;; esac
