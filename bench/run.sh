#!/usr/bin/env bash
# Container benchmark: the cost of running containers, and the memory of what keeps them running.
#
#   bench/run.sh [--dockerd] [--runs N] [--count N] [--parallel N] [--out FILE]
#
#   --dockerd      also measure dockerd (the private daemon of bench/dockerd.sh, started and
#                  stopped here when it is not running) and print the ratios dockyard/dockerd
#   --runs N       runs of each run loop, the median is reported (default 30; 2 warm-up runs more)
#   --count N      containers running `sleep 300` for the start and memory figures (default 50)
#   --parallel N   how many of those are being started at a time (default 10)
#   --out FILE     where the table goes besides stdout (default bench/results/run.txt)
#
# What is measured, for each daemon, with busybox (contrib/mkimage/busybox.sh) and --network none:
#   run loop, API  create + start + wait + remove of `true` through the Engine API (runloop.py)
#   run loop, CLI  `run --rm --network none busybox true` with the daemon's own client
#   start N        wall time of create + start of N `sleep 300` containers, PARALLEL in flight
#   daemon RSS     VmRSS of the daemon idle (image imported, no container) and with N running,
#                  and of its companion: dockyard's forking helper, dockerd's containerd
#   monitor PSS    Pss (smaps_rollup) of each container's monitor process: dockyard's monitor,
#                  dockerd's containerd-shim; median and max over the N
# dockyard runs as a daemon of its own on a temp data root (/var/tmp/dockyard-bench-run.*) with a
# cgroup parent of its own; everything started here is stopped by PID and removed at the end.
# Needs root. Environment: DOCKYARD (dockyard executable), DOCKER (docker client).
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME and awk with a "." decimal point

PROG=${0##*/}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
RUNS=30
COUNT=50
PARALLEL=10
OUT=$HERE/results/run.txt
WANT_DOCKERD=0

usage() { sed -n '2,23s/^# \{0,1\}//p' "$0"; }
say() { echo "$PROG: $*" >&2; }
die() {
  say "$*"
  exit 1
}
need_number() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive number, not '$2'"; }

while [ $# -gt 0 ]; do
  case $1 in
    --dockerd) WANT_DOCKERD=1 ;;
    --runs | --count | --parallel | --out)
      [ $# -ge 2 ] || die "$1 needs a value"
      case $1 in
        --runs) RUNS=$2 ;;
        --count) COUNT=$2 ;;
        --parallel) PARALLEL=$2 ;;
        --out) OUT=$2 ;;
      esac
      shift
      ;;
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
need_number --runs "$RUNS"
need_number --count "$COUNT"
need_number --parallel "$PARALLEL"
[ "$(id -u)" = 0 ] || die "needs root (containers, cgroups, mounts)"
[ "${BASH_VERSINFO[0]}" -ge 5 ] || die "needs bash 5 (EPOCHREALTIME)"

if [ -z "${DOCKYARD:-}" ]; then
  if [ -x "$REPO/.venv/bin/dockyard" ]; then DOCKYARD=$REPO/.venv/bin/dockyard; else DOCKYARD=dockyard; fi
fi
if [ -z "${DOCKER:-}" ]; then
  if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
RUNLOOP=(python3 "$HERE/runloop.py")
CLIENT=("${RUNLOOP[@]}") # for cleanup in lib.sh

WORK=$(mktemp -d /var/tmp/dockyard-bench-run.XXXXXX)
LOG=$(mktemp /tmp/bench-run.XXXXXX.log)
TOKEN=${WORK##*.}
LABEL=dockyard-bench-run=$TOKEN # on every container made here; only those are removed
CGROUP_PARENT=dockyard-bench-$TOKEN
DY_SOCK=$WORK/dockyard.sock
DY_DATA=$WORK/data
DY_EXEC=$WORK/exec
DY=("$DOCKYARD" -H "unix://$DY_SOCK")
DK_RUN=/run/bench-dockerd # bench/dockerd.sh's directories
DK_SOCK=$DK_RUN/docker.sock
DK=("$DOCKER" -H "unix://$DK_SOCK")

dy_pid=""
started_dockerd=0
dockerd_in_use=0
imported_into_dockerd=0
declare -A R=() # TOOL:METRIC -> value

# --- lib.sh: start_dockyard, setup_dockerd, stop_dockyard, cleanup, median and the rest
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

json_field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$@"; }

# cli_loop TOOL CLI...: RUNS timed `run --rm` of `true`, after two untimed ones.
cli_loop() {
  local tool=$1 i t0 t1 times=()
  shift
  for i in $(seq $((RUNS + 2))); do
    t0=$EPOCHREALTIME
    "$@" run --rm --network none --label "$LABEL" busybox:latest true >>"$LOG" 2>&1 ||
      die "$tool: run --rm busybox true failed (log $LOG)"
    t1=$EPOCHREALTIME
    if [ "$i" -gt 2 ]; then times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')"); fi
  done
  R[$tool:cli]=$(median "${times[@]}")
}

# measure TOOL SOCKET DAEMON_PID COMPANION_PID [DATA_ROOT]: every figure of one daemon.
measure() {
  local tool=$1 sock=$2 pid=$3 companion=$4 data_root=${5:-} out
  sleep 2
  R[$tool:rss_idle]=$(rss_kib "$pid")
  R[$tool:companion_idle]=$(rss_kib "$companion")
  say "$tool: run loop through the API ($RUNS runs)"
  out=$("${RUNLOOP[@]}" "$sock" loop --label "$LABEL" --runs "$RUNS")
  echo "$tool loop: $out" >>"$LOG"
  R[$tool:api]=$(json_field "$out" median)
  say "$tool: run loop through the CLI ($RUNS runs)"
  if [ "$tool" = dockyard ]; then cli_loop "$tool" "${DY[@]}"; else cli_loop "$tool" "${DK[@]}"; fi
  say "$tool: starting $COUNT containers, $PARALLEL at a time"
  out=$("${RUNLOOP[@]}" "$sock" many --label "$LABEL" --count "$COUNT" --parallel "$PARALLEL")
  echo "$tool many: $out" >>"$LOG"
  R[$tool:many]=$(json_field "$out" wall)
  sleep 2
  R[$tool:rss_busy]=$(rss_kib "$pid")
  R[$tool:companion_busy]=$(rss_kib "$companion")
  if [ -n "$data_root" ]; then
    out=$("${RUNLOOP[@]}" "$sock" pss --label "$LABEL" --data-root "$data_root")
  else
    out=$("${RUNLOOP[@]}" "$sock" pss --label "$LABEL")
  fi
  echo "$tool pss: $out" >>"$LOG"
  R[$tool:pss_median]=$(json_field "$out" median)
  R[$tool:pss_max]=$(json_field "$out" max)
  R[$tool:monitor]=$(json_field "$out" program)
  out=$("${RUNLOOP[@]}" "$sock" clean --label "$LABEL")
  echo "$tool clean: $out" >>"$LOG"
}

# --- dockyard -------------------------------------------------------------------------------

helper_pid() { # the dockyard daemon's forking helper: its child (monitors are the helper's)
  local pid
  for pid in $(pids_under_work); do
    if [ "$(awk '/^PPid:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)" = "$dy_pid" ] &&
      tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -F "drivers.exec.native.helper $DY_EXEC/"; then
      echo "$pid"
      return
    fi
  done
  die "the dockyard helper process was not found"
}

read_pid() { tr -cd '0-9' <"$1"; }

# --- main -----------------------------------------------------------------------------------

bash "$REPO/contrib/mkimage/busybox.sh" >"$WORK/busybox.tar" 2>>"$LOG" || die "busybox.sh failed"
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)

say "dockyard: starting a daemon on $DY_DATA"
start_dockyard
"${DY[@]}" import -c 'CMD ["sh"]' "$WORK/busybox.tar" busybox:latest >>"$LOG" 2>&1 ||
  die "dockyard import of busybox failed"
dy_version=$("$DOCKYARD" --version 2>/dev/null | head -n 1)
dy_driver=$(json_field "$("${DY[@]}" info --json 2>/dev/null || echo '{}')" Driver 2>/dev/null || true)
helper=$(helper_pid)
measure dockyard "$DY_SOCK" "$dy_pid" "$helper" "$DY_DATA"
stop_dockyard

if [ "$WANT_DOCKERD" = 1 ]; then
  setup_dockerd
  dk_version=$("${DK[@]}" version --format '{{.Server.Version}}')
  dk_driver=$("${DK[@]}" info --format '{{.Driver}}')
  dk_pid=$(read_pid "$DK_RUN/docker.pid")
  ctd_pid=$(read_pid "$DK_RUN/containerd.pid")
  if [ -z "$dk_pid" ] || [ -z "$ctd_pid" ]; then die "no dockerd/containerd pid in $DK_RUN"; fi
  measure dockerd "$DK_SOCK" "$dk_pid" "$ctd_pid"
fi

# --- report ---------------------------------------------------------------------------------

# row LABEL METRIC SCALE DIGITS: one line of the table; SCALE divides the raw figure.
row() {
  local label=$1 metric=$2 scale=$3 digits=$4 dy=- dk=- ratio=-
  if [ -n "${R[dockyard:$metric]:-}" ]; then
    dy=$(awk -v v="${R[dockyard:$metric]}" -v s="$scale" -v d="$digits" 'BEGIN { printf "%.*f", d, v / s }')
  fi
  if [ -n "${R[dockerd:$metric]:-}" ]; then
    dk=$(awk -v v="${R[dockerd:$metric]}" -v s="$scale" -v d="$digits" 'BEGIN { printf "%.*f", d, v / s }')
    ratio=$(awk -v a="${R[dockyard:$metric]}" -v b="${R[dockerd:$metric]}" \
      'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
  fi
  printf '%-44s %10s %10s %17s\n' "$label" "$dy" "$dk" "$ratio"
}

mkdir -p "$(dirname "$OUT")"
{
  echo "# bench/run.sh, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "# host: $(uname -sr), $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1e6 }' /proc/meminfo) RAM;" \
    "load average at start: $load_at_start"
  echo "# dockyard: $dy_version, storage driver ${dy_driver:-?}, data root on $(findmnt -no FSTYPE -T /var/tmp)"
  if [ "$WANT_DOCKERD" = 1 ]; then
    echo "# dockerd: $dk_version, storage driver $dk_driver (bench/dockerd.sh; companion: containerd)"
  fi
  echo "# image busybox (contrib/mkimage/busybox.sh), --network none; runs per loop: $RUNS (+2 warm-up, median)"
  printf '%-44s %10s %10s %17s\n' metric dockyard dockerd dockyard/dockerd
  row "run loop, API: create+start+wait+rm (s)" api 1 3
  row "run loop, CLI: run --rm busybox true (s)" cli 1 3
  row "start $COUNT x sleep 300, $PARALLEL at a time (s)" many 1 2
  row "daemon RSS, idle (MiB)" rss_idle 1024 1
  row "daemon RSS, $COUNT running (MiB)" rss_busy 1024 1
  row "helper/containerd RSS, idle (MiB)" companion_idle 1024 1
  row "helper/containerd RSS, $COUNT running (MiB)" companion_busy 1024 1
  row "monitor PSS, median of $COUNT (MiB)" pss_median 1024 2
  row "monitor PSS, max of $COUNT (MiB)" pss_max 1024 2
  echo "# monitor processes: dockyard ${R[dockyard:monitor]:-?}${R[dockerd:monitor]:+, dockerd ${R[dockerd:monitor]}}"
} | tee "$OUT"
