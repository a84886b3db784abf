#!/usr/bin/env bash
# A real Ray cluster on this machine, for trying multi-node behaviour without opening anything
# to the network.
#
#   cluster/local.sh up [--workers K] [--cpus N]   a head, plus K worker nodes (default K=0, N=1)
#   cluster/local.sh down                          end exactly what `up` started, remove what it made
#   cluster/local.sh status                        Ray's view of the cluster
#
# K=0: the head alone, on 127.0.0.1. K>0: every node in a network namespace of its own, joined by
# a bridge with private addresses (10.213.0.0/24) that this script makes and `down` removes; the
# bridge has no uplink, so nothing leaves the machine. Needs root (ip netns) for K>0.
#
# Environment: RNNJOB_CLUSTER_STATE (default /tmp/rnnjob-cluster) holds what `up` started;
# RNNJOB_CLUSTER_PORT / RNNJOB_CLUSTER_DASHBOARD_PORT (6379 / 8265) the head's ports;
# RNNJOB_CLUSTER_NAME / RNNJOB_CLUSTER_SUBNET (rnnjob / 10.213.0) its links' names and addresses; RAY (the
# project's .venv/bin/ray) the Ray CLI to run. Job drivers run with the PATH this script had, with
# the ray binary's folder first, so `python` there is the one that has rnnjob's dependencies.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
state=${RNNJOB_CLUSTER_STATE:-/tmp/rnnjob-cluster}
ray=${RAY:-$here/.venv/bin/ray}
port=${RNNJOB_CLUSTER_PORT:-6379}
dashboard_port=${RNNJOB_CLUSTER_DASHBOARD_PORT:-8265}
name=${RNNJOB_CLUSTER_NAME:-rnnjob}         # prefix of the namespaces and links it makes
subnet=${RNNJOB_CLUSTER_SUBNET:-10.213.0}   # their private /24
bridge=$name-br0

die() { echo "cluster/local.sh: $*" >&2; exit 1; }

# start one node under its own session, so that `down` can end its whole process group
start_node() {  # name namespace-or-empty ray-start-args...
  local name=$1 ns=$2; shift 2
  local -a run=()
  [ -n "$ns" ] && run=(ip netns exec "$ns")
  # no drain on SIGTERM (Ray waits up to 30 s for a node's work to move elsewhere): `down` ends them all
  "${run[@]}" env PATH="$(dirname "$ray"):$PATH" RAY_USAGE_STATS_ENABLED=0 \
    RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-0}" "${node_env[@]}" \
    setsid "$ray" start --block "$@" >"$state/$name.log" 2>&1 &
  echo "$!" >>"$state/pids"
}

wait_for_nodes() {  # gcs-address expected-count
  local tries=0 pid
  until [ "$(env "${node_env[@]}" RAY_AUTH_MODE=token timeout 20 "$ray" status --address "$1" 2>/dev/null |
             grep -c ' node_')" -ge "$2" ]; do
    while read -r pid; do  # a node whose `ray start` ended will not come: say so now, not in minutes
      kill -0 "$pid" 2>/dev/null || die "a Ray node exited while starting (its last line: $(last_error)); run cluster/local.sh down"
    done <"$state/pids"
    tries=$((tries + 1))
    [ "$tries" -le 90 ] || die "the cluster did not come up with $2 node(s); see $state/*.log"
    sleep 1
  done
}

last_error() {  # the last non-blank line of the nodes' logs
  cat "$state"/*.log 2>/dev/null | grep -v '^[[:space:]]*$' | tail -n 1
}

up() {
  local workers=0 cpus=1
  while [ $# -gt 0 ]; do
    case $1 in
      --workers) workers=$2; shift 2 ;;
      --cpus) cpus=$2; shift 2 ;;
      *) die "unknown option $1 (use --workers K, --cpus N)" ;;
    esac
  done
  [[ $workers =~ ^[0-9]+$ && $cpus =~ ^[1-9][0-9]*$ ]] || die "--workers and --cpus take whole numbers"
  [ ! -e "$state/pids" ] || die "a cluster is already up ($state); run cluster/local.sh down first"
  [ -x "$ray" ] || die "no Ray CLI at $ray (make setup, or set RAY)"
  mkdir -p "$state"
  : >"$state/pids"
  local head_ip=127.0.0.1 head_ns=""
  if [ "$workers" -eq 0 ]; then
    # one node: Ray keeps to loopback when asked this way (its default is the interface address)
    node_env=(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)
  else
    # gloo (torch.distributed on CPUs) would pick the address the host name resolves to: 127.0.0.1
    node_env=(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 RAY_AUTH_MODE=token GLOO_SOCKET_IFNAME=eth0)
    ip link add "$bridge" type bridge
    echo "$bridge" >"$state/bridge"
    ip addr add "$subnet.254/24" dev "$bridge"
    ip link set "$bridge" up
    for i in $(seq 0 "$workers"); do
      local ns=$name-node$i
      ip netns add "$ns"
      echo "$ns" >>"$state/netns"
      ip link add "$name-veth$i" type veth peer name eth0 netns "$ns"
      echo "$name-veth$i" >>"$state/links"
      ip link set "$name-veth$i" master "$bridge" up
      ip netns exec "$ns" ip addr add "$subnet.$((i + 1))/24" dev eth0
      ip netns exec "$ns" ip link set eth0 up
      ip netns exec "$ns" ip link set lo up
      # a route to the bridge only: Ray finds a node's own address by routing towards the head
      ip netns exec "$ns" ip route add default via "$subnet.254"
    done
    head_ip=$subnet.1 head_ns=$name-node0
  fi
  start_node head "$head_ns" --head --node-ip-address "$head_ip" --port "$port" \
    --dashboard-host "$head_ip" --dashboard-port "$dashboard_port" --num-cpus "$cpus"
  wait_for_nodes "$head_ip:$port" 1
  for i in $(seq 1 "$workers"); do
    # a temp folder per node: on one machine they would otherwise share the head's session folder,
    # and a node unpacking a job's working_dir would replace it under the job's driver
    local temp=/tmp/$name-ray-node$i
    echo "$temp" >>"$state/temps"
    start_node "worker$i" "$name-node$i" --address "$head_ip:$port" --node-ip-address "$subnet.$((i + 1))" \
      --num-cpus "$cpus" --temp-dir "$temp"
  done
  wait_for_nodes "$head_ip:$port" $((workers + 1))
  echo "$head_ip:$port" >"$state/gcs"
  echo "Ray cluster up: 1 head + $workers worker node(s), $cpus CPU(s) each"
  echo "  submit:    rnnjob submit JOB.yaml --address http://$head_ip:$dashboard_port"
  echo "  join:      rnnjob submit JOB.yaml --address $head_ip:$port"
  echo "  dashboard: http://$head_ip:$dashboard_port"
  echo "  stop:      cluster/local.sh down"
}

running() {  # how many processes of the recorded groups still run (zombies only wait to be reaped)
  ps -eo pgid=,stat= | awk 'NR == FNR { groups[$1]; next } ($1 in groups) && $2 !~ /^Z/ { n++ } END { print n + 0 }' "$1" -
}

wait_gone() {  # seconds: until no recorded group runs a process; fails if one still does then
  local tries
  for tries in $(seq 1 "$((10 * $1))"); do
    [ "$(running "$state/pids")" -eq 0 ] && return 0
    sleep 0.1
  done
  [ "$(running "$state/pids")" -eq 0 ]
}

down() {
  [ -e "$state/pids" ] || { echo "no cluster from cluster/local.sh is up"; return 0; }
  local pid link ns temp
  while read -r pid; do kill -TERM -- "-$pid" 2>/dev/null || true; done <"$state/pids"
  wait_gone 20 || true  # what TERM did not end in time gets SIGKILL
  # SIGKILL is delivered, not finished, when kill returns: wait for the kernel to end them too
  while read -r pid; do kill -KILL -- "-$pid" 2>/dev/null || true; done <"$state/pids"
  wait_gone 10 || die "process group(s) $(tr '\n' ' ' <"$state/pids")still run after SIGKILL; $state is kept"
  if [ -e "$state/links" ]; then  # deleted now, not whenever the kernel gets round to it
    while read -r link; do ip link del "$link" 2>/dev/null || true; done <"$state/links"
  fi
  if [ -e "$state/netns" ]; then
    while read -r ns; do ip netns del "$ns" 2>/dev/null || true; done <"$state/netns"
  fi
  [ -e "$state/bridge" ] && ip link del "$(cat "$state/bridge")" 2>/dev/null || true
  if [ -e "$state/temps" ]; then
    while read -r temp; do rm -rf "$temp"; done <"$state/temps"
  fi
  # the address file that `ray start --head` leaves for `--address auto`, if it still names ours
  if [ -e "$state/gcs" ] && [ "$(cat /tmp/ray/ray_current_cluster 2>/dev/null)" = "$(cat "$state/gcs")" ]; then
    rm -f /tmp/ray/ray_current_cluster
  fi
  rm -rf "$state"
  echo "Ray cluster down"
}

status() {
  [ -e "$state/gcs" ] || die "no cluster from cluster/local.sh is up"
  local gcs
  gcs=$(cat "$state/gcs")
  case $gcs in 127.*) node_env=(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) ;; *) node_env=() ;; esac
  env "${node_env[@]}" RAY_AUTH_MODE=token "$ray" status --address "$gcs"
}

case ${1:-} in
  up) shift; up "$@" ;;
  down) down ;;
  status) status ;;
  *) echo "usage: cluster/local.sh up [--workers K] [--cpus N] | down | status" >&2; exit 2 ;;
esac
