# Shell functions shared by the benchmarks that run their own dockyard daemon (run.sh, api.sh):
# starting it and the private dockerd, stopping them, and cleaning up.
#
# Sourced, not run. The sourcing script sets: WORK (its temp dir: data root, socket), LOG,
# CGROUP_PARENT, LABEL (on every container it makes; only those are removed), DY_SOCK, DK_SOCK,
# DOCKYARD, DY (its client array), DY_DATA, DY_EXEC, CLIENT (an array: the Python client whose
# "SOCK clean --label L" removes those containers), DK (the docker client for the private
# dockerd), HERE, the state variables dy_pid,
# started_dockerd, dockerd_in_use, imported_into_dockerd, and defines say() and die().
# shellcheck shell=bash disable=SC2154  # the variables are the sourcing script's

# --- cleanup --------------------------------------------------------------------------------

# PIDs of processes whose command line names something under $WORK (one per line).
pids_under_work() {
  local dir pid
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    [ "$pid" = $$ ] && continue
    if tr '\0' '\n' 2>/dev/null <"$dir/cmdline" |
      awk -v d="$WORK" '$0 == d || index($0, d "/") { found = 1 } END { exit !found }'; then
      echo "$pid"
    fi
  done
}

unmount_under() {
  local mnt
  awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while IFS= read -r mnt; do umount "$mnt" 2>/dev/null || umount -l "$mnt" || true; done
}

remove_cgroups() {
  local top
  while IFS= read -r top; do
    find "$top" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    if [ -d "$top" ]; then say "warning: cgroup $top is still there"; fi
  done < <(find /sys/fs/cgroup -maxdepth 8 -type d -name "$CGROUP_PARENT" 2>/dev/null)
}

stop_dockyard() {
  local i
  kill -TERM "$dy_pid" 2>/dev/null || true
  for i in $(seq 300); do
    kill -0 "$dy_pid" 2>/dev/null || break
    [ "$i" = 300 ] && kill -KILL "$dy_pid" 2>/dev/null
    sleep 0.1
  done
  wait "$dy_pid" 2>/dev/null || true
  dy_pid=""
}

cleanup() {
  local rc=$? pid left
  trap - EXIT INT TERM
  if [ -n "$dy_pid" ]; then
    "${CLIENT[@]}" "$DY_SOCK" clean --label "$LABEL" >>"$LOG" 2>&1 || rc=1
    stop_dockyard
  fi
  # Monitors end with their containers and the helper with the daemon; wait for them a little.
  for _ in $(seq 50); do
    [ -z "$(pids_under_work)" ] && break
    sleep 0.1
  done
  left=$(pids_under_work)
  if [ -n "$left" ]; then
    say "killing processes left behind: $(echo "$left" | tr '\n' ' ')"
    for pid in $left; do kill -KILL "$pid" 2>/dev/null || true; done
    rc=1
  fi
  unmount_under "$WORK"
  rm -rf --one-file-system "$WORK"
  remove_cgroups
  if [ "$dockerd_in_use" = 1 ]; then
    "${CLIENT[@]}" "$DK_SOCK" clean --label "$LABEL" >>"$LOG" 2>&1 || rc=1
    if [ "$imported_into_dockerd" = 1 ] && [ "$started_dockerd" = 0 ]; then
      "${DK[@]}" rmi busybox:latest >>"$LOG" 2>&1 || true
    fi
  fi
  if [ "$started_dockerd" = 1 ]; then "$HERE/dockerd.sh" stop >>"$LOG" 2>&1 || rc=1; fi
  if [ "$rc" = 0 ]; then rm -f "$LOG"; else say "log of the commands: $LOG"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- measuring ------------------------------------------------------------------------------

median() { # numbers as arguments
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) exit 1
    if (NR % 2) printf "%.4f", v[(NR + 1) / 2]; else printf "%.4f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# --- the daemons ----------------------------------------------------------------------------

start_dockyard() {
  mkdir -p "$DY_DATA" "$DY_EXEC"
  "$DOCKYARD" daemon -H "unix://$DY_SOCK" --data-root "$DY_DATA" --exec-root "$DY_EXEC" \
    --cgroup-parent "$CGROUP_PARENT" >>"$LOG" 2>&1 &
  dy_pid=$!
  local i
  for i in $(seq 200); do
    "${DY[@]}" version >/dev/null 2>&1 && return 0
    kill -0 "$dy_pid" 2>/dev/null || {
      dy_pid=""
      tail -n 15 "$LOG" >&2
      die "the dockyard daemon did not start"
    }
    [ "$i" = 200 ] && die "the dockyard daemon did not answer within 20 s"
    sleep 0.1
  done
}

setup_dockerd() {
  command -v dockerd >/dev/null || die "--dockerd: dockerd is not installed (bench/dockerd.sh start installs it)"
  if ! "$HERE/dockerd.sh" status >/dev/null; then
    "$HERE/dockerd.sh" start >>"$LOG" 2>&1 || die "bench/dockerd.sh start failed (log $LOG)"
    started_dockerd=1
  fi
  dockerd_in_use=1
  if ! "${DK[@]}" image inspect busybox:latest >/dev/null 2>&1; then
    "${DK[@]}" import -c 'CMD ["sh"]' "$WORK/busybox.tar" busybox:latest >>"$LOG" 2>&1 ||
      die "docker import of busybox failed"
    imported_into_dockerd=1
  fi
}
