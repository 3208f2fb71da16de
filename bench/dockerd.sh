#!/usr/bin/env bash
# A private dockerd for the benchmarks: Debian's docker.io, run by hand next to anything else.
#
#   bench/dockerd.sh start    install docker.io if needed (without starting its services), then
#                             start dockerd on its own socket, data root and exec root
#   bench/dockerd.sh stop     stop that dockerd and the containerd it started (by their PIDs),
#                             remove its data, check for a docker0 bridge and DOCKER iptables chains
#   bench/dockerd.sh status   say whether it runs
#   bench/dockerd.sh env      print the DOCKER_HOST line for it: eval "$(bench/dockerd.sh env)"
#
# dockerd runs with --bridge=none --iptables=false --ip6tables=false --ip-forward=false, so it
# makes no bridge, no iptables chains and no sysctl change; it starts its own containerd (there
# is no system one running: the package's services are kept from starting). Needs root.
set -euo pipefail

PROG=${0##*/}
RUNDIR=/run/bench-dockerd
SOCK=$RUNDIR/docker.sock
PIDFILE=$RUNDIR/docker.pid
EXECROOT=$RUNDIR/exec
DATAROOT=/var/lib/bench-dockerd
LOG=$RUNDIR/dockerd.log
# dockerd 20.10 writes a trust key here (the directory belongs to the package); noted so that
# stop removes only what start made.
KEYFILE=/etc/docker/key.json
MADE_KEY=$RUNDIR/made-key-json
# dockerd also makes /run/docker/plugins whatever its exec root is.
RUNDOCKER=/run/docker
MADE_RUN=$RUNDIR/made-run-docker
DOCKER_CLI=/usr/bin/docker # the package's client, matching the daemon

usage() {
  sed -n '2,13s/^# \{0,1\}//p' "$0"
}

say() { echo "$PROG: $*" >&2; }
die() {
  say "$*"
  exit 1
}

made_policy="" # a policy-rc.d this script created, removed again right after the install

need_root() { [ "$(id -u)" = 0 ] || die "needs root"; }

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

read_pid() { if [ -s "$1" ]; then tr -cd '0-9' <"$1"; fi; }

# PID $1 is alive and runs the program $2 (a stale pidfile may name a reused PID).
pid_is() { pid_alive "$1" && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]; }

# The PIDs of processes named $1 (exact name), one per line; none is fine.
pids_named() { pgrep -x "$1" || true; }

systemd_running() { [ -d /run/systemd/system ]; }

install_docker() {
  command -v dockerd >/dev/null && [ -x "$DOCKER_CLI" ] && return 0
  command -v apt-get >/dev/null || die "dockerd is not installed and there is no apt-get"
  local before after policy=/usr/sbin/policy-rc.d
  before=$(pids_named dockerd; pids_named containerd)
  # invoke-rc.d asks policy-rc.d whether to start services; 101 = no. Keep an existing one.
  if [ ! -e "$policy" ]; then
    made_policy=$policy
    trap 'rm -f "$made_policy"' EXIT
    printf '#!/bin/sh\n# keeps package installs from starting services\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
  fi
  say "installing Debian's docker.io (its services are not started)"
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends docker.io >&2 || rc=$?
  if [ -n "$made_policy" ]; then
    rm -f "$made_policy"
    made_policy=""
    trap - EXIT
  fi
  [ "$rc" = 0 ] || die "apt-get install docker.io failed"
  after=$(pids_named dockerd; pids_named containerd)
  if [ "$after" != "$before" ] && systemd_running; then
    say "the install started docker/containerd services anyway; stopping them"
    systemctl stop docker.service docker.socket containerd.service || true
  fi
  # The package enables its units; this machine should not start a system docker at boot.
  if command -v systemctl >/dev/null; then
    systemctl disable --quiet docker.service docker.socket containerd.service 2>&1 |
      grep -v -e 'Synchronizing state' -e 'Executing:' >&2 || true
  fi
  if systemd_running; then
    local unit
    for unit in docker.service docker.socket containerd.service; do
      if systemctl is-active --quiet "$unit"; then
        say "warning: $unit is active (it was before this script ran, or could not be stopped)"
      fi
    done
  fi
}

dockerd_pid() {
  local pid
  pid=$(read_pid "$PIDFILE")
  if pid_is "$pid" dockerd; then echo "$pid"; fi
}

containerd_pid() {
  local f pid
  for f in "$RUNDIR/containerd.pid" "$EXECROOT/containerd/containerd.pid"; do
    pid=$(read_pid "$f")
    if pid_is "$pid" containerd; then
      echo "$pid"
      return
    fi
  done
}

cmd_start() {
  need_root
  if [ -n "$(dockerd_pid)" ]; then
    say "already running (pid $(dockerd_pid)); $("$0" env)"
    return 0
  fi
  install_docker
  mkdir -p "$RUNDIR" "$EXECROOT" "$DATAROOT"
  chmod 0700 "$RUNDIR" "$DATAROOT"
  if [ ! -e "$KEYFILE" ]; then touch "$MADE_KEY"; fi
  if [ ! -e "$RUNDOCKER" ]; then touch "$MADE_RUN"; fi

  local args=(
    --host "unix://$SOCK" --data-root "$DATAROOT" --exec-root "$EXECROOT" --pidfile "$PIDFILE"
    --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false
    --userland-proxy=false --group root
  )
  if [ -n "${BENCH_DOCKERD_STORAGE_DRIVER:-}" ]; then
    args+=(--storage-driver "$BENCH_DOCKERD_STORAGE_DRIVER")
  fi
  # setsid: its own session, so it outlives this script and no terminal signal reaches it.
  setsid dockerd "${args[@]}" </dev/null >"$LOG" 2>&1 &
  local launched=$! i
  for i in $(seq 300); do
    if "$DOCKER_CLI" -H "unix://$SOCK" version >/dev/null 2>&1; then break; fi
    if ! pid_alive "$launched"; then
      tail -n 20 "$LOG" >&2 || true
      die "dockerd exited while starting (log above; $LOG)"
    fi
    if [ "$i" = 300 ]; then die "dockerd did not answer within 60 s (pid $launched, log $LOG)"; fi
    sleep 0.2
  done
  local cpid
  cpid=$(containerd_pid)
  # dockerd writes its managed containerd's PID under the exec root; keep a copy beside ours.
  if [ -n "$cpid" ]; then echo "$cpid" >"$RUNDIR/containerd.pid"; fi
  say "dockerd $("$DOCKER_CLI" -H "unix://$SOCK" version --format '{{.Server.Version}}') running:" \
    "pid $(dockerd_pid), containerd pid ${cpid:-?}," \
    "storage driver $("$DOCKER_CLI" -H "unix://$SOCK" info --format '{{.Driver}}')"
  cmd_env
}

# Wait up to $2 tenths of a second for PID $1 to exit.
wait_gone() {
  local i
  for i in $(seq "$2"); do
    pid_alive "$1" || return 0
    sleep 0.1
  done
  ! pid_alive "$1"
}

stop_pid() { # PID NAME
  local pid=$1 name=$2
  pid_alive "$pid" || return 0
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" 300; then
    say "$name (pid $pid) did not stop in 30 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 50 || say "warning: $name (pid $pid) is still there"
  fi
}

unmount_under() { # DIR: unmount every mount at or below DIR, deepest first
  local mnt
  awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while IFS= read -r mnt; do
      say "unmounting $mnt"
      umount "$mnt" 2>/dev/null || umount -l "$mnt" || say "warning: could not unmount $mnt"
    done
}

# Called once ours is gone: any dockerd still running is someone else's, and so are its
# bridge and chains.
other_dockerd() { [ -n "$(pids_named dockerd)" ]; }

cmd_stop() {
  need_root
  local dpid cpid
  dpid=$(dockerd_pid)
  cpid=$(containerd_pid)
  if [ -z "$dpid" ] && [ -z "$cpid" ] && [ ! -e "$RUNDIR" ] && [ ! -e "$DATAROOT" ]; then
    say "not running, nothing to clean up"
  fi
  if [ -n "$dpid" ]; then stop_pid "$dpid" dockerd; fi
  # dockerd stops the containerd it manages; if that one is still there, stop it by its PID.
  if [ -n "$cpid" ]; then stop_pid "$cpid" containerd; fi

  unmount_under "$DATAROOT"
  unmount_under "$RUNDIR"
  if [ -e "$MADE_KEY" ] && [ -e "$KEYFILE" ]; then
    say "removing $KEYFILE (this dockerd created it)"
    rm -f "$KEYFILE"
  fi
  if [ -e "$MADE_RUN" ] && [ -d "$RUNDOCKER" ]; then
    # Only if empty: a dockerd started meanwhile may use it.
    rmdir "$RUNDOCKER/plugins" 2>/dev/null || true
    rmdir "$RUNDOCKER" 2>/dev/null || say "leaving $RUNDOCKER: not empty"
  fi
  if [ -e "$DATAROOT" ]; then
    say "removing $DATAROOT ($(du -sh "$DATAROOT" 2>/dev/null | cut -f1))"
    rm -rf --one-file-system "$DATAROOT"
  fi
  rm -rf --one-file-system "$RUNDIR"

  local problems=0
  if ip link show docker0 >/dev/null 2>&1; then
    if other_dockerd; then
      say "docker0 exists but another dockerd runs; leaving it"
    else
      say "docker0 bridge found; deleting it"
      ip link delete docker0 || problems=1
    fi
  fi
  local ipt table
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for table in filter nat; do
      "$ipt" -t "$table" -S 2>/dev/null | grep -q -- '^-N DOCKER' || continue
      if other_dockerd; then
        say "$ipt $table has DOCKER chains but another dockerd runs; leaving them"
        continue
      fi
      say "$ipt $table: removing DOCKER chains"
      # Rules that jump to them first, then the chains themselves.
      "$ipt" -t "$table" -S | grep -E -- '^-A .* -j DOCKER' | grep -v -E -- '^-A DOCKER' |
        sed 's/^-A /-D /' | while read -r -a rule; do "$ipt" -t "$table" "${rule[@]}" || true; done
      "$ipt" -t "$table" -S | sed -n 's/^-N \(DOCKER[^ ]*\)$/\1/p' |
        while read -r chain; do "$ipt" -t "$table" -F "$chain" || true; done
      "$ipt" -t "$table" -S | sed -n 's/^-N \(DOCKER[^ ]*\)$/\1/p' |
        while read -r chain; do "$ipt" -t "$table" -X "$chain" || problems=1; done
    done
  done

  local left=""
  if pid_alive "$dpid"; then left="$left dockerd:$dpid"; fi
  if pid_alive "$cpid"; then left="$left containerd:$cpid"; fi
  if [ -e "$DATAROOT" ] || [ -e "$RUNDIR" ]; then left="$left files"; fi
  if ip link show docker0 >/dev/null 2>&1 && ! other_dockerd; then left="$left docker0"; fi
  if [ -n "$left" ] || [ "$problems" != 0 ]; then
    say "NOT clean:${left:- see above}"
    return 1
  fi
  say "stopped; removed $DATAROOT and $RUNDIR; no docker0 bridge, no DOCKER iptables chains"
}

cmd_status() {
  local pid
  pid=$(dockerd_pid)
  if [ -n "$pid" ]; then
    echo "running: dockerd pid $pid, containerd pid $(containerd_pid), socket $SOCK"
  else
    echo "not running"
    return 1
  fi
}

cmd_env() {
  echo "export DOCKER_HOST=unix://$SOCK"
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
