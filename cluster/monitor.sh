#!/usr/bin/env bash
# Prometheus for a running Ray cluster, on 127.0.0.1 only.
#
#   cluster/monitor.sh up [--port P]   start Prometheus (default port 9090) scraping the Ray cluster
#   cluster/monitor.sh down            end what `up` started, and nothing else
#   cluster/monitor.sh status          whether it runs, and where
#   cluster/monitor.sh install         install Prometheus where it is missing, and start nothing
#
# Prometheus finds the Ray nodes through the service-discovery file the Ray head writes into its
# temp folder ($RAY_TMPDIR/ray, default /tmp/ray): prom_metrics_service_discovery.json. rnnjob's Grafana
# dashboard (cluster/grafana/rnnjob-dashboard.json) is copied into the Grafana provisioning folder
# the head generates, beside Ray's own dashboards. Prometheus comes from Debian's package: `up`
# installs it with apt-get when it is missing and this is root on Debian, and otherwise says how.
#
# Environment: RNNJOB_MONITOR_STATE (default ~/.cache/rnnjob/monitor, a 0700 folder of ours) holds
# what `up` started; RAY_TMPDIR the system temp folder the head was started with (Ray's own folder is
# its ray/ subfolder, as Ray makes it); PROMETHEUS the binary to run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
state=${RNNJOB_MONITOR_STATE:-$HOME/.cache/rnnjob/monitor}
ray_temp=${RAY_TMPDIR:-/tmp}/ray
sd_file=$ray_temp/prom_metrics_service_discovery.json

die() { echo "cluster/monitor.sh: $*" >&2; exit 1; }

state_var=RNNJOB_MONITOR_STATE what=Prometheus script=cluster/monitor.sh
# shellcheck source=cluster/service.sh
. "$here/service.sh"

prometheus_binary() {
  local found=${PROMETHEUS:-$(command -v prometheus || true)}
  [ -n "$found" ] || [ ! -x /usr/bin/prometheus ] || found=/usr/bin/prometheus
  if [ -z "$found" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # one installation at a time on this machine: a second `up` waits for the first's, then finds it done
    exec 9>/tmp/rnnjob-prometheus-install.lock
    flock 9
    found=$(command -v prometheus || true)
  fi
  if [ -z "$found" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Prometheus (Debian's prometheus package)..." >&2
    # no service started by the package: this script starts its own, on 127.0.0.1
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && made_policy=1; fi
    { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends prometheus >"$state/apt.log" 2>&1 ||
      { apt-get -o DPkg::Lock::Timeout=300 update -q >>"$state/apt.log" 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends prometheus >>"$state/apt.log" 2>&1; }
    } || true
    [ -z "$made_policy" ] || rm -f "$policy"
    found=$(command -v prometheus || true)
    [ -n "$found" ] || die "apt-get could not install prometheus (see $state/apt.log)"
  fi
  exec 9>&-
  [ -n "$found" ] || die "no prometheus binary: install Debian's prometheus package (apt-get install prometheus) or set PROMETHEUS"
  echo "$found"
}

up() {
  local port=9090
  while [ $# -gt 0 ]; do
    case $1 in
      --port) port=$2; shift 2 ;;
      *) die "unknown option $1 (use --port P)" ;;
    esac
  done
  [[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "--port takes a port number"
  own_state
  ! ours || die "Prometheus is already up (pid $(cat "$state/pid")); run cluster/monitor.sh down first"
  local binary
  binary=$(prometheus_binary)
  cat >"$state/prometheus.yml" <<EOF
# written by cluster/monitor.sh: every Ray node the head lists, every 5 s
global:
  scrape_interval: 5s
  evaluation_interval: 5s
scrape_configs:
  - job_name: ray
    file_sd_configs:
      - files: ['$sd_file']
        refresh_interval: 5s
EOF
  mkdir -p "$state/data"
  setsid "$binary" --config.file="$state/prometheus.yml" --storage.tsdb.path="$state/data" \
    --web.listen-address="127.0.0.1:$port" >"$state/prometheus.log" 2>&1 </dev/null &
  local pid=$!
  echo "$port" >"$state/port"
  record_started "$pid"
  local tries=0
  until curl -fsS "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || die "Prometheus exited while starting (its last line: $(tail -n 1 "$state/prometheus.log"))"
    tries=$((tries + 1))
    [ "$tries" -le 100 ] || die "Prometheus did not become ready on 127.0.0.1:$port; see $state/prometheus.log"
    sleep 0.2
  done
  local grafana=$ray_temp/session_latest/metrics/grafana/dashboards
  if [ -d "$grafana" ]; then
    cp "$here/grafana/rnnjob-dashboard.json" "$grafana/"
    echo "Grafana dashboard: copied into $grafana (beside Ray's own)"
  else
    echo "Grafana dashboard: no Ray head's provisioning folder in $ray_temp yet; run this again after the head starts"
  fi
  echo "Prometheus up: http://127.0.0.1:$port  (scraping the nodes listed in $sd_file)"
  echo "  query:  curl 'http://127.0.0.1:$port/api/v1/query?query=ray_rnnjob_test_accuracy'"
  echo "  for the Ray dashboard's Metrics page, start the head (make cluster-up) with:"
  echo "    export RAY_PROMETHEUS_HOST=http://127.0.0.1:$port"
  echo "    export RAY_GRAFANA_HOST=http://127.0.0.1:3000 RAY_GRAFANA_IFRAME_HOST=http://127.0.0.1:3000   # where Grafana runs"
  echo "  and run Grafana with the head's config: grafana-server --config $ray_temp/session_latest/metrics/grafana/grafana.ini web"
  echo "  stop:   cluster/monitor.sh down"
}

down() {
  stop_recorded
}

install() {  # what `up` does first, alone: for a machine that will not reach Debian's mirror later
  own_state
  echo "Prometheus: $(prometheus_binary)"
}

status() {
  if ours; then
    echo "Prometheus up: http://127.0.0.1:$(cat "$state/port")  (pid $(cat "$state/pid"))"
  else
    echo "no Prometheus from cluster/monitor.sh is up"
    return 1
  fi
}

case ${1:-} in
  up) shift; up "$@" ;;
  down) down ;;
  status) status ;;
  install) install ;;
  *) echo "usage: cluster/monitor.sh up [--port P] | down | status | install" >&2; exit 2 ;;
esac
