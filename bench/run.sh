#!/usr/bin/env bash
# Container benchmark: the cost of running containers, and the memory of what keeps them running.
#
#   bench/run.sh [--dockerd] [--runs N] [--count N] [--parallel N] [--out FILE]
#
#   --dockerd      also measure dockerd (the private daemon of bench/dockerd.sh, started with
#                  its default bridge and stopped here when it is not running) and print the
#                  ratios dockyard/dockerd
#   --runs N       runs of each run loop, the median is reported (default 30; 2 warm-up runs more)
#   --count N      containers running `sleep 300` for the start and memory figures (default 50)
#   --parallel N   how many of those are being started at a time (default 10)
#   --out FILE     where the table goes besides stdout (default bench/results/run.txt)
#
# What is measured, for each daemon, with busybox (contrib/mkimage/busybox.sh):
#   run loop, API  create + start + wait + remove of `true` through the Engine API (runloop.py),
#                  with --network none and on the default bridge; and the difference
#   run loop, CLI  `run --rm --network none busybox true` and `run --rm busybox true` (default
#                  bridge) with the daemon's own client; and the difference
#   docker CLI     the same two runs with ONE client for both daemons, the docker CLI 28
#                  (DOCKER_HOST=unix://<the daemon's socket>; it first negotiates the API
#                  version with a HEAD /_ping): the daemons compared without the start-up of
#                  dockyard's Python client
#   start N        wall time of create + start of N `sleep 300` containers, PARALLEL in flight,
#                  with --network none
#   daemon RSS     VmRSS of the daemon idle (image imported, no container) and with N running,
#                  and of its companion: dockyard's forking helper, dockerd's containerd
#   monitor PSS    Pss (smaps_rollup) of each container's monitor process: dockyard's monitor,
#                  dockerd's containerd-shim; median and max over the N
# dockyard runs as a daemon of its own on a temp data root (/var/tmp/dockyard-bench-run.*) with a
# cgroup parent of its own and its own default bridge (dybench0, 10.216.0.1/24, no IP forwarding
# change); dockerd's default bridge is docker0. Everything started here is stopped by PID and
# removed at the end, bridges and iptables rules included. dockyard's Python gets a bytecode
# cache in the temp dir (PYTHONPYCACHEPREFIX, PYTHONDONTWRITEBYTECODE unset), as an installed
# dockyard has its .pyc files: without it every CLI run would compile its modules anew. Needs
# root. Environment: DOCKYARD (dockyard executable), DOCKER (docker client of dockerd), DOCKER28
# (the docker client run against both daemons; default /usr/local/bin/docker, without it the
# docker CLI rows stay empty).
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
TARGET_RATIO=0.3  # dockyard's CLI run on the bridge, at most this times dockerd's
TARGET_BRIDGE_MS=20 # what the bridge may add to a CLI run over --network none, at most

usage() { sed -n '2,37s/^# \{0,1\}//p' "$0"; }
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
DOCKER28=${DOCKER28:-/usr/local/bin/docker}
RUNLOOP=(python3 -B "$HERE/runloop.py") # -B: it also runs after $WORK (the bytecode cache) is gone
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
export PYTHONPYCACHEPREFIX=$WORK/pycache
unset PYTHONDONTWRITEBYTECODE
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

# json_field JSON KEY...: the value at KEY (KEY KEY for a nested one).
json_field() {
  python3 -c 'import functools, json, sys
print(functools.reduce(lambda v, k: v[k], sys.argv[2:], json.loads(sys.argv[1])))' "$@"
}

# cli_run TOOL NETWORK HOST CLI...: one `run --rm` of `true`, its wall time on stdout; NETWORK
# none is --network none, default no --network (the default bridge); HOST, when not empty, is
# the client's DOCKER_HOST (it runs in a subshell: the export ends with it).
cli_run() {
  local tool=$1 network=$2 host=$3 t0 t1 net=()
  shift 3
  if [ "$network" != default ]; then net=(--network "$network"); fi
  if [ -n "$host" ]; then export DOCKER_HOST=$host; fi
  t0=$EPOCHREALTIME
  "$@" run --rm "${net[@]}" --label "$LABEL" busybox:latest true >>"$LOG" 2>&1 ||
    die "$tool: run --rm ${net[*]} busybox true failed (log $LOG)"
  t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }'
}

# cli_loop TOOL METRIC BRIDGE HOST CLI...: RUNS timed rounds after two untimed ones, each a
# run with --network none and, when BRIDGE is 1, one on the default bridge, taking turns to go
# first (as runloop.py's loop does); R[TOOL:METRIC] and R[TOOL:METRIC_bridge] are the medians.
# HOST: as for cli_run.
cli_loop() {
  local tool=$1 metric=$2 bridge=$3 host=$4 i net networks=(none) none=() bridged=() t
  shift 4
  if [ "$bridge" = 1 ]; then networks=(none default); fi
  for i in $(seq $((RUNS + 2))); do
    if [ "$i" -gt 1 ]; then networks=("${networks[@]:1}" "${networks[0]}"); fi
    for net in "${networks[@]}"; do
      t=$(cli_run "$tool" "$net" "$host" "$@")
      if [ "$i" -le 2 ]; then continue; fi
      if [ "$net" = none ]; then none+=("$t"); else bridged+=("$t"); fi
    done
  done
  R[$tool:$metric]=$(median "${none[@]}")
  if [ "$bridge" = 1 ]; then R[$tool:${metric}_bridge]=$(median "${bridged[@]}"); fi
}

# api_loop TOOL BRIDGE SOCKET: runloop.py's run loop on none and (BRIDGE 1) the default bridge;
# R[TOOL:api] and R[TOOL:api_bridge] are the medians.
api_loop() {
  local out networks=(--network none)
  if [ "$2" = 1 ]; then networks+=(--network default); fi
  out=$("${RUNLOOP[@]}" "$3" loop --label "$LABEL" --runs "$RUNS" "${networks[@]}")
  echo "$1 loop: $out" >>"$LOG"
  R[$1:api]=$(json_field "$out" none median)
  if [ "$2" = 1 ]; then R[$1:api_bridge]=$(json_field "$out" default median); fi
}

# difference TOOL METRIC: METRIC_bridge - METRIC, when both were measured.
difference() {
  if [ -n "${R[$1:$2]:-}" ] && [ -n "${R[$1:${2}_bridge]:-}" ]; then
    R[$1:${2}_diff]=$(awk -v a="${R[$1:${2}_bridge]}" -v b="${R[$1:$2]}" 'BEGIN { printf "%.4f", a - b }')
  fi
}

# measure TOOL SOCKET DAEMON_PID COMPANION_PID BRIDGE [DATA_ROOT]: every figure of one daemon;
# BRIDGE 1 when it has a default bridge to measure the run loops on.
measure() {
  local tool=$1 sock=$2 pid=$3 companion=$4 bridge=$5 data_root=${6:-} out cli
  if [ "$tool" = dockyard ]; then cli=("${DY[@]}"); else cli=("${DK[@]}"); fi
  sleep 2
  R[$tool:rss_idle]=$(rss_kib "$pid")
  R[$tool:companion_idle]=$(rss_kib "$companion")
  local what="--network none"
  if [ "$bridge" = 1 ]; then what="--network none and the default bridge, alternating"; fi
  say "$tool: run loop through the API, $what ($RUNS runs each)"
  api_loop "$tool" "$bridge" "$sock"
  say "$tool: run loop through the CLI, $what ($RUNS runs each)"
  cli_loop "$tool" cli "$bridge" "" "${cli[@]}"
  if [ -x "$DOCKER28" ]; then
    say "$tool: run loop through $DOCKER28, $what ($RUNS runs each)"
    cli_loop "$tool" dcli "$bridge" "unix://$sock" "$DOCKER28"
  fi
  difference "$tool" api
  difference "$tool" cli
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
if [ -x "$DOCKER28" ]; then
  dc_version=$("$DOCKER28" --version 2>/dev/null | head -n 1)
else
  say "no $DOCKER28 (DOCKER28=): no docker CLI rows"
fi
dy_version=$("$DOCKYARD" --version 2>/dev/null | head -n 1)
dy_driver=$(json_field "$("${DY[@]}" info --json 2>/dev/null || echo '{}')" Driver 2>/dev/null || true)
helper=$(helper_pid)
measure dockyard "$DY_SOCK" "$dy_pid" "$helper" 1 "$DY_DATA"
stop_dockyard

if [ "$WANT_DOCKERD" = 1 ]; then
  setup_dockerd bridge
  dk_bridge=0
  if dockerd_has_bridge; then dk_bridge=1; else say "dockerd has no default bridge (it ran already, with --bridge=none): no bridge figures"; fi
  dk_version=$("${DK[@]}" version --format '{{.Server.Version}}')
  dk_driver=$("${DK[@]}" info --format '{{.Driver}}')
  dk_pid=$(read_pid "$DK_RUN/docker.pid")
  ctd_pid=$(read_pid "$DK_RUN/containerd.pid")
  if [ -z "$dk_pid" ] || [ -z "$ctd_pid" ]; then die "no dockerd/containerd pid in $DK_RUN"; fi
  measure dockerd "$DK_SOCK" "$dk_pid" "$ctd_pid" "$dk_bridge"
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

verdict() { # VALUE LIMIT: whether VALUE <= LIMIT
  awk -v v="$1" -v l="$2" 'BEGIN { if (v == "" || v == "-") print "?"; else print (v <= l ? "met" : "NOT met") }'
}

# The issue's targets, from the CLI figures: dockyard's run on the bridge against dockerd's (each
# with its own client, and both with the docker CLI), and what the bridge adds to dockyard's run.
targets() {
  local ratio=- dc_ratio=- dy_ms dk_ms=-
  if [ -n "${R[dockerd:cli_bridge]:-}" ]; then
    ratio=$(awk -v a="${R[dockyard:cli_bridge]}" -v b="${R[dockerd:cli_bridge]}" 'BEGIN { printf "%.2f", a / b }')
  fi
  dy_ms=$(awk -v d="${R[dockyard:cli_diff]}" 'BEGIN { printf "%.1f", d * 1000 }')
  if [ -n "${R[dockerd:cli_diff]:-}" ]; then
    dk_ms=$(awk -v d="${R[dockerd:cli_diff]}" 'BEGIN { printf "%.1f", d * 1000 }')
  fi
  echo "# target: CLI run --rm busybox true on the default bridge <= ${TARGET_RATIO}x dockerd's:" \
    "${ratio}x, $(verdict "$ratio" "$TARGET_RATIO")"
  if [ -n "${R[dockerd:dcli_bridge]:-}" ] && [ -n "${R[dockyard:dcli_bridge]:-}" ]; then
    # three decimals: a ratio of 0.303 is not met, though the table's two make it 0.30
    dc_ratio=$(awk -v a="${R[dockyard:dcli_bridge]}" -v b="${R[dockerd:dcli_bridge]}" 'BEGIN { printf "%.3f", a / b }')
    echo "# target, the same client for both (docker CLI run --rm busybox true, default bridge):" \
      "${dc_ratio}x, $(verdict "$dc_ratio" "$TARGET_RATIO")"
  fi
  echo "# target: the bridge adds <= $TARGET_BRIDGE_MS ms to a CLI run over --network none:" \
    "${dy_ms} ms, $(verdict "$dy_ms" "$TARGET_BRIDGE_MS") (dockerd's bridge adds ${dk_ms} ms)"
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
  echo "# docker CLI rows: ${dc_version:-none} ($DOCKER28), DOCKER_HOST the daemon's socket," \
    "the same client for both daemons"
  echo "# image busybox (contrib/mkimage/busybox.sh); runs per loop: $RUNS (+2 warm-up, median)"
  bridges="dockyard $DY_BRIDGE $DY_BIP"
  if [ "$WANT_DOCKERD" = 1 ]; then bridges="$bridges, dockerd docker0"; fi
  echo "# networks: none (--network none) and the default bridge ($bridges; iptables on, no IP" \
    "forwarding change), alternating run by run; bridge - none is the difference of the medians"
  printf '%-44s %10s %10s %17s\n' metric dockyard dockerd dockyard/dockerd
  row "run loop, API: create+start+wait+rm, none (s)" api 1 3
  row "run loop, API: same, default bridge (s)" api_bridge 1 3
  row "run loop, API: bridge - none (ms)" api_diff 0.001 0
  row "run loop, CLI: run --rm --network none (s)" cli 1 3
  row "run loop, CLI: run --rm (default bridge) (s)" cli_bridge 1 3
  row "run loop, CLI: bridge - none (ms)" cli_diff 0.001 0
  row "docker CLI: run --rm, none (s)" dcli 1 3
  row "docker CLI: run --rm, default bridge (s)" dcli_bridge 1 3
  row "start $COUNT x sleep 300, none, $PARALLEL at a time (s)" many 1 2
  row "daemon RSS, idle (MiB)" rss_idle 1024 1
  row "daemon RSS, $COUNT running (MiB)" rss_busy 1024 1
  row "helper/containerd RSS, idle (MiB)" companion_idle 1024 1
  row "helper/containerd RSS, $COUNT running (MiB)" companion_busy 1024 1
  row "monitor PSS, median of $COUNT (MiB)" pss_median 1024 2
  row "monitor PSS, max of $COUNT (MiB)" pss_max 1024 2
  echo "# monitor processes: dockyard ${R[dockyard:monitor]:-?}${R[dockerd:monitor]:+, dockerd ${R[dockerd:monitor]}}"
  targets
} | tee "$OUT"
