# Shell functions shared by the benchmarks that run their own dockyard daemon (run.sh, api.sh):
# starting it and the private dockerd, stopping them, and cleaning up.
#
# Sourced, not run. The sourcing script sets: WORK (its temp dir: data root, socket), LOG,
# CGROUP_PARENT, LABEL (on every container it makes; only those are removed), DY_SOCK, DK_SOCK,
# DOCKYARD, DY (its client array), DY_DATA, DY_EXEC, CLIENT (an array: the Python client whose
# "SOCK clean --label L" removes those containers), DK (the docker client for the private
# dockerd), HERE, the state variables dy_pid,
# started_dockerd, dockerd_in_use, imported_into_dockerd, and defines say() and die().
#
# Networks: the dockyard daemon's default network is a bridge of its own, DY_BRIDGE with the
# address DY_BIP (defaults below; no IP forwarding change), never one that exists already. The
# daemon deletes that bridge and its iptables chains (DY-<bridge>*) when it stops with no
# container; cleanup checks that it did, and removes what is left (its veths, rules, chains).
# `setup_dockerd bridge` starts the private dockerd with its default bridge docker0 and iptables
# rules; cleanup then removes what that dockerd added (bench/dockerd.sh stop removes docker0 and
# the DOCKER chains; the rules it added to built-in chains are removed here, by comparison with
# the rules there were before).
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

# --- networks -------------------------------------------------------------------------------

DY_BRIDGE=${DY_BRIDGE:-dybench0}
DY_BIP=${DY_BIP:-10.216.0.1/24}
dy_bridge_ours=0  # 1 once start_dockyard found no DY_BRIDGE: from then on it is this run's
dk_bridge_ours=0  # 1 when setup_dockerd started a dockerd with docker0: this run's too
dk_rules_before="" # the filter and nat rules (iptables -S) before that dockerd started

link_exists() { ip link show "$1" >/dev/null 2>&1; }

ports_of() { # BRIDGE: the interfaces attached to it, one per line
  ip -o link show master "$1" 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'
}

rules_now() { # TABLE...: "TABLE <iptables -S line>" per rule and chain
  local table
  for table in "$@"; do iptables -t "$table" -S 2>/dev/null | sed "s/^/$table /"; done
}

# delete_rule TABLE -A CHAIN ARGS...: the rule of an `iptables -S` line, deleted.
delete_rule() {
  local table=$1
  shift 2
  iptables -t "$table" -D "$@"
}

# remove_chains TABLE REGEX: the rules that jump to the chains matching REGEX (anchored), then
# the chains themselves; the number of things removed on stdout.
remove_chains() {
  local table=$1 re=$2 n=0 line chain
  local -a rule
  while IFS= read -r line; do
    read -r -a rule <<<"$line"
    delete_rule "$table" "${rule[@]}" && n=$((n + 1))
  done < <(iptables -t "$table" -S | grep -E -- "^-A .* -j $re( |\$)" | grep -v -E -- "^-A $re ")
  while IFS= read -r chain; do
    iptables -t "$table" -F "$chain" && iptables -t "$table" -X "$chain" && n=$((n + 1))
  done < <(iptables -t "$table" -S | sed -n -E "s/^-N ($re)\$/\1/p")
  echo "$n"
}

# Before the dockyard daemon starts: its bridge must not exist (it would be adopted, and
# deleted at the end) nor its chains (another daemon with the same bridge name would own them).
check_dockyard_network() {
  if link_exists "$DY_BRIDGE"; then
    die "bridge $DY_BRIDGE exists already (another benchmark running, or left over: ip link delete $DY_BRIDGE)"
  fi
  if command -v iptables >/dev/null && rules_now filter nat | grep -q -E -- "-N DY-$DY_BRIDGE(-|\$)"; then
    die "iptables chains DY-$DY_BRIDGE* exist already (another daemon uses bridge $DY_BRIDGE)"
  fi
  dy_bridge_ours=1
}

# After the dockyard daemon stopped: nothing of its network should be left; what is, is
# removed and reported (status 1).
clean_dockyard_network() {
  [ "$dy_bridge_ours" = 1 ] || return 0
  local left="" port table n re="DY-$DY_BRIDGE(-[A-Z0-9]+)?"
  if link_exists "$DY_BRIDGE"; then
    for port in $(ports_of "$DY_BRIDGE"); do
      ip link delete "$port" 2>/dev/null && left="$left $port"
    done
    ip link delete "$DY_BRIDGE" && left="$left $DY_BRIDGE"
  fi
  if command -v iptables >/dev/null; then
    for table in filter nat; do
      n=$(remove_chains "$table" "$re")
      if [ "$n" != 0 ]; then left="$left $table:$n-chains/jumps"; fi
    done
  fi
  dy_bridge_ours=0
  if [ -n "$left" ]; then
    say "the dockyard daemon left network things behind, removed now:$left"
    return 1
  fi
}

# Before a dockerd with the default bridge starts: docker0 must not exist; the rules are noted.
check_dockerd_network() {
  if link_exists docker0; then
    die "docker0 exists already and no bench dockerd runs (someone else's; not touching it)"
  fi
  dk_rules_before=$(rules_now filter nat)
  dk_bridge_ours=1
}

# clean_dockerd_network [PORT...]: after bench/dockerd.sh stop (which deletes docker0 and the
# DOCKER chains), the veths that were docker0's ports (PORT...: none, when dockerd removed its
# containers) and the rules dockerd added to built-in chains (docker0's FORWARD accepts,
# MASQUERADE of 172.17.0.0/16) go too, and only those: rules there were not before that name
# docker0 or a DOCKER chain.
clean_dockerd_network() {
  [ "$dk_bridge_ours" = 1 ] || return 0
  local line port status=0 n=0
  local -a rule
  for port in "$@"; do
    if link_exists "$port"; then
      say "removing $port, a veth of dockerd's docker0"
      ip link delete "$port" || status=1
    fi
  done
  while IFS= read -r line; do
    read -r -a rule <<<"$line"
    if delete_rule "${rule[@]}"; then n=$((n + 1)); else status=1; fi
  done < <(comm -13 <(sort <<<"$dk_rules_before") <(rules_now filter nat | sort) |
    grep -E -- '^[a-z]+ -A .*(docker0|DOCKER)')
  if [ "$n" != 0 ]; then say "removed $n iptables rules dockerd added for docker0"; fi
  if link_exists docker0 || rules_now filter nat | grep -q -E -- '-N DOCKER'; then
    say "warning: docker0 or DOCKER chains are still there (another dockerd running?)"
    status=1
  fi
  dk_bridge_ours=0
  return "$status"
}

cleanup() {
  local rc=$? pid left dk_ports
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
  clean_dockyard_network || rc=1
  unmount_under "$WORK"
  rm -rf --one-file-system "$WORK"
  remove_cgroups
  if [ "$dockerd_in_use" = 1 ]; then
    "${CLIENT[@]}" "$DK_SOCK" clean --label "$LABEL" >>"$LOG" 2>&1 || rc=1
    if [ "$imported_into_dockerd" = 1 ] && [ "$started_dockerd" = 0 ]; then
      "${DK[@]}" rmi busybox:latest >>"$LOG" 2>&1 || true
    fi
  fi
  if [ "$started_dockerd" = 1 ]; then
    dk_ports=$(if [ "$dk_bridge_ours" = 1 ]; then ports_of docker0; fi)
    "$HERE/dockerd.sh" stop >>"$LOG" 2>&1 || rc=1
    # shellcheck disable=SC2086  # interface names, no blanks
    clean_dockerd_network $dk_ports || rc=1
  fi
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
  check_dockyard_network
  "$DOCKYARD" daemon -H "unix://$DY_SOCK" --data-root "$DY_DATA" --exec-root "$DY_EXEC" \
    --cgroup-parent "$CGROUP_PARENT" --bridge "$DY_BRIDGE" --bip "$DY_BIP" --ip-forward=false \
    >>"$LOG" 2>&1 &
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

# setup_dockerd [bridge]: the private dockerd, started unless it runs; with "bridge" one that
# this starts has its default bridge docker0 and iptables rules (bench/dockerd.sh runs dockerd
# with --bridge=none --iptables=false --ip-masq=false: a `dockerd` ahead in PATH drops those
# three flags). A dockerd that ran already is used as it is (see dockerd_has_bridge).
setup_dockerd() {
  command -v dockerd >/dev/null || die "--dockerd: dockerd is not installed (bench/dockerd.sh start installs it)"
  if ! "$HERE/dockerd.sh" status >/dev/null; then
    local path=$PATH
    if [ "${1:-}" = bridge ]; then
      check_dockerd_network
      mkdir -p "$WORK/bin"
      cat >"$WORK/bin/dockerd" <<EOF
#!/bin/bash
# bench/lib.sh: dockerd as bench/dockerd.sh starts it, but with its default bridge and rules
args=()
for a in "\$@"; do
  case \$a in --bridge=none | --iptables=false | --ip-masq=false) ;; *) args+=("\$a") ;; esac
done
exec $(command -v dockerd) "\${args[@]}"
EOF
      chmod 0755 "$WORK/bin/dockerd"
      path=$WORK/bin:$PATH
    fi
    started_dockerd=1
    PATH=$path "$HERE/dockerd.sh" start >>"$LOG" 2>&1 || die "bench/dockerd.sh start failed (log $LOG)"
  fi
  dockerd_in_use=1
  if ! "${DK[@]}" image inspect busybox:latest >/dev/null 2>&1; then
    "${DK[@]}" import -c 'CMD ["sh"]' "$WORK/busybox.tar" busybox:latest >>"$LOG" 2>&1 ||
      die "docker import of busybox failed"
    imported_into_dockerd=1
  fi
}

dockerd_has_bridge() { "${DK[@]}" network inspect bridge >/dev/null 2>&1; }
