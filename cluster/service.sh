# Sourced by cluster/monitor.sh and cluster/s3.sh: one background service of ours on this machine, its
# process recorded in a 0700 folder of this user's and ended by process group, never by name.
# The sourcing script sets: state (that folder), state_var (the variable that names it), what (the
# service, for messages) and script (its own path, for messages), and defines die.

own_state() {  # a folder only we can write, or refuse: its files decide what `down` signals
  mkdir -p -m 0700 "$state"
  [ -O "$state" ] && [ ! -L "$state" ] || die "$state is not a folder of this user's; set $state_var"
  chmod 0700 "$state"
}

start_time() {  # a process's start time in clock ticks since boot (field 22 of /proc/PID/stat)
  awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null
}

record_started() {  # pid: the process `up` just started under setsid (the leader of its own group)
  echo "$1" >"$state/pid"
  sleep 0.2
  start_time "$1" >"$state/started"
  tr '\0' ' ' <"/proc/$1/cmdline" >"$state/cmdline" 2>/dev/null || true
}

ours() {  # whether the recorded pid is still the process `up` started: same start time and command
  local pid
  [ -e "$state/pid" ] || return 1
  pid=$(cat "$state/pid")
  [[ $pid =~ ^[0-9]+$ ]] && [ "$pid" -gt 1 ] || return 1
  [ "$(start_time "$pid")" = "$(cat "$state/started")" ] || return 1
  [ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" = "$(cat "$state/cmdline")" ]
}

stop_recorded() {  # `down`: end the recorded process group if it is still ours, then forget it
  [ -e "$state/pid" ] || { echo "no $what from $script is up"; return 0; }
  [ -O "$state" ] || die "$state is not a folder of this user's; not signalling anything"
  if ours; then
    local pid
    pid=$(cat "$state/pid")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
  else
    echo "the recorded $what has ended already (or its pid is another process's now): nothing signalled"
  fi
  rm -f "$state/pid" "$state/started" "$state/cmdline" "$state/port" "$state/host"
  echo "$what down"
}
