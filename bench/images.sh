#!/usr/bin/env bash
# Image benchmark: how long import, load and save of a ~200 MB two-layer image take.
#
#   bench/images.sh [--dockerd] [--no-dockyard] [--runs N] [--keep]
#
#   --dockerd      also time dockerd (docker import / load -i / save -o) and print the ratios
#                  dockyard/dockerd. Uses $DOCKER_HOST, else the private daemon of
#                  bench/dockerd.sh, which is started (and stopped at the end) when not running.
#                  Without the flag dockerd is timed too when $DOCKER_HOST answers.
#   --no-dockyard  time dockerd only
#   --runs N       runs per operation, the median is reported (default 5)
#   --keep         keep the dockyard bench daemon's data root afterwards (default: removed)
#
# The image comes from bench/mkbenchimage.py, made once and kept in $BENCH_DIR
# (/var/tmp/dockyard-bench). dockyard is timed against a daemon of its own, started and stopped
# here by PID: --data-root /var/lib/dockyard-bench -H unix:///run/dockyard-bench.sock.
# Every timed run does the full work: the image is removed before each import and load.
# Needs root. Environment: DOCKYARD (dockyard executable), DOCKER (docker client).
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME and awk with a "." decimal point

PROG=${0##*/}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
BENCH_DIR=${BENCH_DIR:-/var/tmp/dockyard-bench}
DY_SOCK=/run/dockyard-bench.sock
DY_DATA=/var/lib/dockyard-bench
DY_EXEC=/run/dockyard-bench
IMPORT_TAG=benchimage-import:latest
LOAD_TAG=benchimage:latest

RUNS=5
WANT_DOCKERD=0
WANT_DOCKYARD=1
KEEP=0

usage() { sed -n '2,19s/^# \{0,1\}//p' "$0"; }
say() { echo "$PROG: $*" >&2; }
die() {
  say "$*"
  exit 1
}

while [ $# -gt 0 ]; do
  case $1 in
    --dockerd) WANT_DOCKERD=1 ;;
    --no-dockyard) WANT_DOCKYARD=0 ;;
    --keep) KEEP=1 ;;
    --runs)
      [ $# -ge 2 ] || die "--runs needs a number"
      RUNS=$2
      shift
      ;;
    --runs=*) RUNS=${1#--runs=} ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
  shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive number, not '$RUNS'"
[ "$(id -u)" = 0 ] || die "needs root (daemons with data roots in /var/lib)"
[ "${BASH_VERSINFO[0]}" -ge 5 ] || die "needs bash 5 (EPOCHREALTIME)"

if [ -z "${DOCKYARD:-}" ]; then
  if [ -x "$REPO/.venv/bin/dockyard" ]; then DOCKYARD=$REPO/.venv/bin/dockyard; else DOCKYARD=dockyard; fi
fi
if [ -z "${DOCKER:-}" ]; then
  # Debian's client goes with Debian's dockerd; any other docker on PATH otherwise.
  if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi

LOG=$(mktemp /tmp/bench-images.XXXXXX.log)
dy_pid=""
started_dockerd=0

cleanup() {
  local rc=$?
  rm -f "$BENCH_DIR/out.tar" "$LOG.head"
  if [ -n "$dy_pid" ]; then stop_dockyard; fi
  if [ "$started_dockerd" = 1 ]; then "$HERE/dockerd.sh" stop || rc=1; fi
  if [ "$rc" = 0 ]; then rm -f "$LOG"; else say "log of the commands: $LOG"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the image ------------------------------------------------------------------------------

make_image() {
  local stamp want
  want=$(sha256sum "$HERE/mkbenchimage.py" | cut -d' ' -f1)
  stamp=$(cat "$BENCH_DIR/stamp" 2>/dev/null || true)
  if [ "$stamp" = "$want" ] && [ -s "$BENCH_DIR/image.tar" ] && [ -s "$BENCH_DIR/rootfs.tar" ]; then
    return
  fi
  say "generating the bench image in $BENCH_DIR"
  mkdir -p "$BENCH_DIR"
  python3 "$HERE/mkbenchimage.py" "$BENCH_DIR" >&2
  echo "$want" >"$BENCH_DIR/stamp"
}

# --- timing ---------------------------------------------------------------------------------

declare -A TIMES=()     # TOOL:OP -> " s1 s2 ..."
declare -A SAVED_SIZE=() # TOOL -> bytes of its save output

# timed TOOL OP CMD...: run CMD once, append its wall-clock seconds to TIMES[TOOL:OP].
timed() {
  local tool=$1 op=$2 t0 t1 s
  shift 2
  sync
  echo "+ $*" >>"$LOG"
  t0=$EPOCHREALTIME
  if ! "$@" >>"$LOG" 2>&1; then
    tail -n 15 "$LOG" >&2
    die "$tool $op failed: $*"
  fi
  t1=$EPOCHREALTIME
  s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  TIMES[$tool:$op]="${TIMES[$tool:$op]:-} $s"
  printf '  %-8s %-6s %8s s\n' "$tool" "$op" "$s" >&2
}

median() { # numbers as arguments
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) exit 1
    if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

quiet() { "$@" >>"$LOG" 2>&1 || true; }

# bench TOOL CLI...: N imports, N loads and N saves, each after removing what the last one made.
bench() {
  local tool=$1 i
  shift
  local cli=("$@")
  say "$tool: $RUNS runs each of import, load, save"
  quiet "${cli[@]}" rmi "$IMPORT_TAG"
  quiet "${cli[@]}" rmi "$LOAD_TAG"
  for i in $(seq "$RUNS"); do
    timed "$tool" import "${cli[@]}" import "$BENCH_DIR/rootfs.tar" "$IMPORT_TAG"
    # Removed every time, also after the last run: load must not find layer 1 already there.
    "${cli[@]}" rmi "$IMPORT_TAG" >>"$LOG" 2>&1 || die "$tool rmi $IMPORT_TAG failed"
  done
  for i in $(seq "$RUNS"); do
    if [ "$i" -gt 1 ]; then
      "${cli[@]}" rmi "$LOAD_TAG" >>"$LOG" 2>&1 || die "$tool rmi $LOAD_TAG failed"
    fi
    timed "$tool" load "${cli[@]}" load -i "$BENCH_DIR/image.tar"
  done
  for i in $(seq "$RUNS"); do
    rm -f "$BENCH_DIR/out.tar"
    timed "$tool" save "${cli[@]}" save "$LOAD_TAG" -o "$BENCH_DIR/out.tar"
    [ -s "$BENCH_DIR/out.tar" ] || die "$tool save wrote nothing"
  done
  SAVED_SIZE[$tool]=$(stat -c %s "$BENCH_DIR/out.tar")
  rm -f "$BENCH_DIR/out.tar"
  "${cli[@]}" rmi "$LOAD_TAG" >>"$LOG" 2>&1 || die "$tool rmi $LOAD_TAG failed"
}

# --- dockyard -------------------------------------------------------------------------------

DY=("$DOCKYARD" -H "unix://$DY_SOCK")

unmount_under() {
  local mnt
  awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while IFS= read -r mnt; do umount "$mnt" 2>/dev/null || umount -l "$mnt" || true; done
}

start_dockyard() {
  if "${DY[@]}" version >/dev/null 2>&1; then
    die "a daemon already answers on $DY_SOCK; stop it first"
  fi
  mkdir -p "$DY_DATA" "$DY_EXEC"
  "$DOCKYARD" daemon -H "unix://$DY_SOCK" --data-root "$DY_DATA" --exec-root "$DY_EXEC" \
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
  rm -f "$DY_SOCK"
  unmount_under "$DY_EXEC"
  unmount_under "$DY_DATA"
  rm -rf --one-file-system "$DY_EXEC"
  if [ "$KEEP" = 0 ]; then rm -rf --one-file-system "$DY_DATA"; fi
}

dockyard_has_image_commands() {
  local c
  for c in import load save rmi; do
    "$DOCKYARD" "$c" --help >/dev/null 2>&1 || return 1
  done
}

# --- dockerd --------------------------------------------------------------------------------

docker_up() { "$DOCKER" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

setup_dockerd() {
  if [ "$WANT_DOCKERD" = 1 ]; then
    if [ -z "${DOCKER_HOST:-}" ]; then
      eval "$("$HERE/dockerd.sh" env)"
    fi
    export DOCKER_HOST
    if ! docker_up; then
      if [ "$DOCKER_HOST" = "$("$HERE/dockerd.sh" env | sed 's/^export DOCKER_HOST=//')" ]; then
        "$HERE/dockerd.sh" start >/dev/null
        started_dockerd=1
        [ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker
      fi
      docker_up || die "no docker daemon answers at $DOCKER_HOST"
    fi
    return 0
  fi
  [ -n "${DOCKER_HOST:-}" ] && docker_up
}

# --- main -----------------------------------------------------------------------------------

make_image
run_dockyard=0
run_dockerd=0
if [ "$WANT_DOCKYARD" = 1 ]; then
  if dockyard_has_image_commands; then
    run_dockyard=1
  else
    say "$DOCKYARD has no import/load/save/rmi commands yet: skipping dockyard"
  fi
fi
if setup_dockerd; then run_dockerd=1; fi
[ "$run_dockyard" = 1 ] || [ "$run_dockerd" = 1 ] || die "nothing to time (no dockyard image commands, no dockerd)"

mb() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
{
  echo "# bench/images.sh, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "# host: $(uname -sr), $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1e6 }' /proc/meminfo) RAM," \
    "$BENCH_DIR on $(findmnt -no FSTYPE -T "$BENCH_DIR")"
  echo "# image: image.tar $(mb "$BENCH_DIR/image.tar") (layer1 $(mb "$BENCH_DIR/layer1.tar")," \
    "layer2 $(mb "$BENCH_DIR/layer2.tar")); rootfs.tar $(mb "$BENCH_DIR/rootfs.tar")"
  echo "# runs per operation: $RUNS (median reported); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$LOG.head"

if [ "$run_dockyard" = 1 ]; then
  start_dockyard
  echo "# dockyard: $("$DOCKYARD" --version 2>/dev/null | head -n 1), data root $DY_DATA" >>"$LOG.head"
  bench dockyard "${DY[@]}"
  stop_dockyard
fi
if [ "$run_dockerd" = 1 ]; then
  echo "# dockerd: $("$DOCKER" version --format '{{.Server.Version}}') at $DOCKER_HOST," \
    "storage driver $("$DOCKER" info --format '{{.Driver}}')" >>"$LOG.head"
  bench dockerd "$DOCKER"
fi

# --- report ---------------------------------------------------------------------------------

cat "$LOG.head"
rm -f "$LOG.head"
printf '%-8s %14s %14s %18s\n' operation "dockyard (s)" "dockerd (s)" "dockyard/dockerd"
for op in import load save; do
  dy=-
  dk=-
  ratio=-
  # Word splitting of the recorded times is intended.
  # shellcheck disable=SC2086
  if [ "$run_dockyard" = 1 ]; then dy=$(median ${TIMES[dockyard:$op]}); fi
  # shellcheck disable=SC2086
  if [ "$run_dockerd" = 1 ]; then dk=$(median ${TIMES[dockerd:$op]}); fi
  if [ "$dy" != - ] && [ "$dk" != - ]; then
    ratio=$(awk -v a="$dy" -v b="$dk" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
  fi
  printf '%-8s %14s %14s %18s\n' "$op" "$dy" "$dk" "$ratio"
done
echo "# all runs (s):"
for key in dockyard:import dockyard:load dockyard:save dockerd:import dockerd:load dockerd:save; do
  if [ -n "${TIMES[$key]:-}" ]; then echo "#   $key:${TIMES[$key]}"; fi
done
for tool in dockyard dockerd; do
  if [ -n "${SAVED_SIZE[$tool]:-}" ]; then
    echo "#   $tool save output: $(awk -v b="${SAVED_SIZE[$tool]}" 'BEGIN { printf "%.1f MB", b / 1e6 }')"
  fi
done
