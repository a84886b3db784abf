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
# Token authentication is on for every node: `up` creates ~/.ray/auth_token (0600, through Ray's own
# `ray get-auth-token --generate`) when no token is set (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or that file).
#
# Environment: RNNJOB_CLUSTER_STATE (default ~/.cache/rnnjob/cluster, a 0700 folder of this user's)
# holds what `up` started: `down` signals only process groups whose leader is still the process
# `up` recorded (same start time and command), never a pid of 1 or less;
# RNNJOB_CLUSTER_PORT / RNNJOB_CLUSTER_DASHBOARD_PORT (6379 / 8265) the head's ports;
# RNNJOB_CLUSTER_METRICS_PORT each node's Prometheus metrics endpoint (default: a port Ray picks);
# RNNJOB_CLUSTER_AGENT_PORT each node's dashboard agent, which takes Jobs API submissions (Ray's
# default 52365: a second Ray on one machine needs another);
# RNNJOB_CLUSTER_NAME / RNNJOB_CLUSTER_SUBNET (rnnjob / 10.213.0) its links' names and addresses; RAY (the
# project's .venv/bin/ray) the Ray CLI to run. Job drivers run with the PATH this script had, with
# the ray binary's folder first, so `python` there is the one that has rnnjob's dependencies.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
state=${RNNJOB_CLUSTER_STATE:-$HOME/.cache/rnnjob/cluster}
ray=${RAY:-$here/.venv/bin/ray}
port=${RNNJOB_CLUSTER_PORT:-6379}
dashboard_port=${RNNJOB_CLUSTER_DASHBOARD_PORT:-8265}
metrics_port=${RNNJOB_CLUSTER_METRICS_PORT:-}
agent_port=${RNNJOB_CLUSTER_AGENT_PORT:-}
name=${RNNJOB_CLUSTER_NAME:-rnnjob}         # prefix of the namespaces and links it makes
subnet=${RNNJOB_CLUSTER_SUBNET:-10.213.0}   # their private /24
bridge=$name-br0

die() { echo "cluster/local.sh: $*" >&2; exit 1; }

own_state() {  # a folder only we can write, or refuse: its files decide what `down` signals and removes
  mkdir -p -m 0700 "$state"
  [ -d "$state" ] && [ ! -L "$state" ] && [ -O "$state" ] ||
    die "$state is not a folder of this user's; set RNNJOB_CLUSTER_STATE to one"
  chmod 0700 "$state"
}

start_time() {  # a process's start time in clock ticks since boot (field 22 of /proc/PID/stat)
  awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null
}

command_of() {
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null
}

record() {  # pid: its start time and command, so that `down` can tell it from a later process with its pid
  local pid=$1 tries
  # the pid passes through `ip netns exec`, `env` and `setsid` before it execs the `ray` script itself
  for tries in $(seq 1 100); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = ray ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  printf '%s %s %s\n' "$pid" "$(start_time "$pid")" "$(command_of "$pid" | md5sum | cut -c1-32)" >>"$state/pids"
}

ours() {  # pid start-time command-hash: whether that pid is still the process `up` started
  local pid=$1 started=$2 command=$3
  [[ $pid =~ ^[0-9]+$ ]] && [ "$pid" -gt 1 ] || return 1
  [ -n "$started" ] && [ "$(start_time "$pid")" = "$started" ] || return 1
  [ "$(command_of "$pid" | md5sum | cut -c1-32)" = "$command" ]
}

ensure_token() {
  [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -n "${RAY_AUTH_TOKEN_PATH:-}" ] || [ -s "$HOME/.ray/auth_token" ] && return 0
  # Ray's own lines about it only when it fails (its token is printed on stdout: never shown)
  local said
  said=$(umask 077 && "$ray" get-auth-token --generate 2>&1 >/dev/null) \
    || die "could not create a Ray token in ~/.ray/auth_token: $(printf '%s\n' "$said" | tail -n 1)"
  chmod 0600 "$HOME/.ray/auth_token"
  echo "created a Ray authentication token in ~/.ray/auth_token (0600); clients read it from there"
}

# start one node under its own session, so that `down` can end its whole process group
start_node() {  # name namespace-or-empty ray-start-args...
  local name=$1 ns=$2; shift 2
  local -a run=()
  [ -n "$ns" ] && run=(ip netns exec "$ns")
  [ -z "$metrics_port" ] || set -- "$@" --metrics-export-port "$metrics_port"
  [ -z "$agent_port" ] || set -- "$@" --dashboard-agent-listen-port "$agent_port"
  # no drain on SIGTERM (Ray waits up to 30 s for a node's work to move elsewhere): `down` ends them all
  "${run[@]}" env PATH="$(dirname "$ray"):$PATH" RAY_USAGE_STATS_ENABLED=0 \
    RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-0}" "${node_env[@]}" \
    setsid "$ray" start --block "$@" >"$state/$name.log" 2>&1 &
  record "$!"
}

wait_for_nodes() {  # gcs-address expected-count
  local tries=0 pid
  until [ "$(env "${node_env[@]}" RAY_AUTH_MODE=token timeout 20 "$ray" status --address "$1" 2>/dev/null |
             grep -c ' node_')" -ge "$2" ]; do
    while read -r pid _; do  # a node whose `ray start` ended will not come: say so now, not in minutes
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
  own_state
  [ ! -e "$state/pids" ] || die "a cluster is already up ($state); run cluster/local.sh down first"
  [ -x "$ray" ] || die "no Ray CLI at $ray (make setup, or set RAY)"
  ensure_token
  : >"$state/pids"
  local head_ip=127.0.0.1 head_ns=""
  if [ "$workers" -eq 0 ]; then
    # one node: Ray keeps to loopback when asked this way (its default is the interface address)
    node_env=(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=token)
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

our_groups() {  # the recorded groups still ours: leader unchanged, or leader gone (see signal_ours)
  local pid started command
  while read -r pid started command; do
    [[ $pid =~ ^[0-9]+$ ]] && [ "$pid" -gt 1 ] || continue
    if ours "$pid" "$started" "$command" || ! kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
  done <"$state/pids"
}

running() {  # how many processes of our groups still run (zombies only wait to be reaped)
  local groups
  groups=$(our_groups)
  [ -n "$groups" ] || { echo 0; return; }
  ps -eo pgid=,stat= | awk -v g="$groups" 'BEGIN { n = split(g, a, "\n"); for (i = 1; i <= n; i++) want[a[i]] }
    ($1 in want) && $2 !~ /^Z/ { c++ } END { print c + 0 }'
}

wait_gone() {  # seconds: until no recorded group runs a process; fails if one still does then
  local tries
  for tries in $(seq 1 "$((10 * $1))"); do
    [ "$(running)" -eq 0 ] && return 0
    sleep 0.1
  done
  [ "$(running)" -eq 0 ]
}

signal_ours() {  # signal: each group of ours. A group whose leader has ended is still ours: Linux reuses
  # no pid that a group still holds, so what remains with that id (a raylet, say) is what `up` started
  local pid
  for pid in $(our_groups); do
    kill "-$1" -- "-$pid" 2>/dev/null || true
  done
}

report_strangers() {  # the recorded pids that now belong to other processes: left alone, and said so
  local pid started command
  while read -r pid started command; do
    [[ $pid =~ ^[0-9]+$ ]] && [ "$pid" -gt 1 ] || continue
    if kill -0 "$pid" 2>/dev/null && ! ours "$pid" "$started" "$command"; then
      echo "cluster/local.sh: left pid $pid alone: it is not the process \`up\` started" >&2
    fi
  done <"$state/pids"
}

down() {
  [ -e "$state/pids" ] || { echo "no cluster from cluster/local.sh is up"; return 0; }
  [ -d "$state" ] && [ ! -L "$state" ] && [ -O "$state" ] || die "$state is not a folder of this user's; not signalling anything"
  local link ns temp
  report_strangers
  signal_ours TERM
  wait_gone 20 || signal_ours KILL  # what TERM did not end in time
  # SIGKILL is delivered, not finished, when kill returns: wait for the kernel to end them too
  wait_gone 10 || die "process group(s) $(awk '{ printf "%s ", $1 }' "$state/pids")still run after SIGKILL; $state is kept"
  if [ -e "$state/links" ]; then  # deleted now, not whenever the kernel gets round to it
    while read -r link; do
      [[ $link =~ ^[A-Za-z0-9_.-]+-veth[0-9]+$ ]] && ip link del "$link" 2>/dev/null || true
    done <"$state/links"
  fi
  if [ -e "$state/netns" ]; then
    while read -r ns; do
      [[ $ns =~ ^[A-Za-z0-9_.-]+-node[0-9]+$ ]] && ip netns del "$ns" 2>/dev/null || true
    done <"$state/netns"
  fi
  if [ -e "$state/bridge" ]; then
    link=$(cat "$state/bridge")
    [[ $link =~ ^[A-Za-z0-9_.-]+-br0$ ]] && ip link del "$link" 2>/dev/null || true
  fi
  if [ -e "$state/temps" ]; then
    while read -r temp; do  # only the temp folders `up` names, never anything else the file might say
      [[ $temp =~ ^/tmp/[A-Za-z0-9_.-]+-ray-node[0-9]+$ ]] && [ ! -L "$temp" ] && rm -rf -- "$temp"
    done <"$state/temps"
  fi
  # the address file that `ray start --head` leaves for `--address auto`, if it still names ours
  if [ -e "$state/gcs" ] && [ "$(cat /tmp/ray/ray_current_cluster 2>/dev/null)" = "$(cat "$state/gcs")" ]; then
    rm -f /tmp/ray/ray_current_cluster
  fi
  rm -rf -- "$state"
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
