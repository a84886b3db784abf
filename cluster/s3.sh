#!/usr/bin/env bash
# An S3-compatible server on 127.0.0.1 to try `output.storage: s3://...` without a cloud account.
#
#   cluster/s3.sh up [--port P] [--bucket B] [--host H]
#                                              start moto's S3 server (default 127.0.0.1:9000, bucket rnnjob;
#                                              --host: another address of this machine, e.g. a bridge's)
#   cluster/s3.sh down                         end what `up` started, and nothing else
#   cluster/s3.sh status                       whether it runs, and where
#
# The server is moto's (`moto_server`, in rnnjob's dev dependencies, which `make` installs); it keeps
# its objects in memory, so `down` forgets them. rnnjob reaches it, as it reaches AWS or any other
# S3-compatible store, through the standard variables `up` prints: AWS_ENDPOINT_URL and a key pair.
# This server accepts any key; a real store checks them.
#
# Environment: RNNJOB_S3_STATE (default ~/.cache/rnnjob/s3, a 0700 folder of ours) holds what `up`
# started; PYTHON the Python whose moto_server and pyarrow are used (default .venv/bin/python).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
state=${RNNJOB_S3_STATE:-$HOME/.cache/rnnjob/s3}
python=${PYTHON:-$here/../.venv/bin/python}

die() { echo "cluster/s3.sh: $*" >&2; exit 1; }

state_var=RNNJOB_S3_STATE what="S3 server" script=cluster/s3.sh
# shellcheck source=cluster/service.sh
. "$here/service.sh"

exports() {
  echo "export AWS_ENDPOINT_URL=http://$(cat "$state/host"):$(cat "$state/port") AWS_ACCESS_KEY_ID=rnnjob" \
       "AWS_SECRET_ACCESS_KEY=rnnjob AWS_DEFAULT_REGION=us-east-1"
}

up() {
  local port=9000 bucket=rnnjob host=127.0.0.1
  while [ $# -gt 0 ]; do
    case $1 in
      --port) port=$2; shift 2 ;;
      --bucket) bucket=$2; shift 2 ;;
      --host) host=$2; shift 2 ;;
      *) die "unknown option $1 (use --port P, --bucket B, --host H)" ;;
    esac
  done
  [[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "--port takes a port number"
  [[ $bucket =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || die "--bucket takes an S3 bucket name (3-63 of a-z 0-9 . -)"
  local moto
  moto=$(dirname "$python")/moto_server
  [ -x "$moto" ] || die "no moto_server next to $python: run make setup (rnnjob's dev dependencies) or set PYTHON"
  own_state
  ! ours || die "the S3 server is already up (pid $(cat "$state/pid")); run cluster/s3.sh down first"
  [[ $host =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--host takes an IPv4 address of this machine"
  setsid "$moto" -H "$host" -p "$port" >"$state/s3.log" 2>&1 </dev/null &
  local pid=$!
  echo "$port" >"$state/port"
  echo "$host" >"$state/host"
  record_started "$pid"
  # the bucket, made through pyarrow as rnnjob talks to the store; tried until the server answers
  "$python" - "$host:$port" "$bucket" <<'EOF' || { down >/dev/null; die "the server did not start; see $state/s3.log"; }
import sys, time
from pyarrow import fs
where, bucket = sys.argv[1], sys.argv[2]
store = fs.S3FileSystem(endpoint_override=where, scheme="http", access_key="rnnjob",
                        secret_key="rnnjob", region="us-east-1", allow_bucket_creation=True)
for _ in range(150):
    try:
        store.create_dir(bucket)
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(1)
EOF
  echo "S3 server up: http://$host:$port, bucket s3://$bucket (in memory: down forgets it)"
  echo "  point rnnjob at it:  $(exports)"
  echo "  then:                rnnjob run jobs/smoke.yaml --set output.storage=s3://$bucket/runs"
  echo "  stop:                cluster/s3.sh down"
}

down() {
  stop_recorded
}

status() {
  if ours; then
    echo "S3 server up: http://$(cat "$state/host"):$(cat "$state/port")  (pid $(cat "$state/pid"))"
    echo "  $(exports)"
  else
    echo "no S3 server from cluster/s3.sh is up"
  fi
}

case ${1:-} in
  up) shift; up "$@" ;;
  down) down ;;
  status) status ;;
  *) die "usage: cluster/s3.sh up [--port P] [--bucket B] [--host H] | down | status" ;;
esac
