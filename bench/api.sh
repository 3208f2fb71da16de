#!/usr/bin/env bash
# API benchmark: requests per second and latency of the Engine API, one connection, no load.
#
#   bench/api.sh [--dockerd] [--rounds N] [--requests-ping N] [--requests-list N]
#                [--containers N] [--out FILE]
#
#   --dockerd          also measure dockerd (the private daemon of bench/dockerd.sh, started and
#                      stopped here when it is not running) and print the ratios dockyard/dockerd
#   --rounds N         measurements of each figure, the median is reported (default 5); the
#                      daemons take turns, and which goes first alternates from round to round
#   --requests-ping N  timed requests of GET /_ping per measurement (default 20000)
#   --requests-list N  timed requests of GET /containers/json?all=1 per measurement (default 3000)
#   --containers N     stopped containers present while listing (default 100)
#   --out FILE         where the table goes besides stdout (default bench/results/api.txt)
#
# The client is bench/apiload.py (python3, http.client): ONE keep-alive HTTP/1.1 connection on
# the daemon's unix socket, requests one after another (no pipelining), 300 untimed warm-up
# requests, then N timed ones: req/s, p50 and p99 latency, and the daemon's CPU time per
# request (utime + stime of the daemon process over the timed requests; dockerd's own PID, not
# containerd's). Paths: unversioned /_ping as the docker CLI sends it, and the versioned
# /v1.45/containers/json?all=1 as docker-py sends it; dockerd 20.10 speaks at most API 1.41, so
# it gets /v1.41/containers/json?all=1. The containers run busybox `true` to exit before.
# dockyard runs as a daemon of its own on a temp data root (/var/tmp/dockyard-bench-api.*) with a
# cgroup parent of its own; everything started here is stopped by PID and removed at the end.
# Needs root. Environment: DOCKYARD (dockyard executable), DOCKER (docker client).
set -euo pipefail
export LC_ALL=C # awk with a "." decimal point

PROG=${0##*/}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
ROUNDS=5
REQ_PING=20000
REQ_LIST=3000
CONTAINERS=100
WARMUP=300
OUT=$HERE/results/api.txt
WANT_DOCKERD=0
# Targets of the issue: dockyard's req/s at least this many times dockerd's.
TARGET_PING=1
TARGET_LIST=5

usage() { sed -n '2,27s/^# \{0,1\}//p' "$0"; }
say() { echo "$PROG: $*" >&2; }
die() {
  say "$*"
  exit 1
}
need_number() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive number, not '$2'"; }

while [ $# -gt 0 ]; do
  case $1 in
    --dockerd) WANT_DOCKERD=1 ;;
    --rounds | --requests-ping | --requests-list | --containers | --out)
      [ $# -ge 2 ] || die "$1 needs a value"
      case $1 in
        --rounds) ROUNDS=$2 ;;
        --requests-ping) REQ_PING=$2 ;;
        --requests-list) REQ_LIST=$2 ;;
        --containers) CONTAINERS=$2 ;;
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
need_number --rounds "$ROUNDS"
need_number --requests-ping "$REQ_PING"
need_number --requests-list "$REQ_LIST"
need_number --containers "$CONTAINERS"
if [ "$REQ_PING" -lt 2 ] || [ "$REQ_LIST" -lt 2 ]; then die "percentiles need at least 2 requests"; fi
[ "$(id -u)" = 0 ] || die "needs root (containers, cgroups, mounts)"

if [ -z "${DOCKYARD:-}" ]; then
  if [ -x "$REPO/.venv/bin/dockyard" ]; then DOCKYARD=$REPO/.venv/bin/dockyard; else DOCKYARD=dockyard; fi
fi
if [ -z "${DOCKER:-}" ]; then
  if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
LOAD=(python3 "$HERE/apiload.py")
CLIENT=("${LOAD[@]}") # for cleanup in lib.sh

WORK=$(mktemp -d /var/tmp/dockyard-bench-api.XXXXXX)
LOG=$(mktemp /tmp/bench-api.XXXXXX.log)
TOKEN=${WORK##*.}
LABEL=dockyard-bench-api=$TOKEN # on every container made here; only those are removed
CGROUP_PARENT=dockyard-bench-$TOKEN
DY_SOCK=$WORK/dockyard.sock
DY_DATA=$WORK/data
DY_EXEC=$WORK/exec
DY=("$DOCKYARD" -H "unix://$DY_SOCK")
DK_RUN=/run/bench-dockerd # bench/dockerd.sh's directories
DK_SOCK=$DK_RUN/docker.sock
DK=("$DOCKER" -H "unix://$DK_SOCK")
PING_PATH=/_ping
declare -A LIST_PATH=([dockyard]='/v1.45/containers/json?all=1' [dockerd]='/v1.41/containers/json?all=1')

dy_pid=""
dk_pid=""
started_dockerd=0
dockerd_in_use=0
imported_into_dockerd=0
declare -A R=() # TOOL:WHAT:FIGURE -> the figures of every round, space-separated

# --- lib.sh: start_dockyard, setup_dockerd, stop_dockyard, cleanup, median and the rest
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

# fields JSON NAME...: the named fields of a JSON object, space-separated ("-" for null).
fields() {
  python3 -c 'import json, sys
o = json.loads(sys.argv[1])
print(" ".join("-" if o.get(k) is None else str(o[k]) for k in sys.argv[2:]))' "$@"
}

# bench TOOL WHAT SOCKET PATH REQUESTS PID: one measurement, its figures added to R.
bench() {
  local tool=$1 what=$2 sock=$3 path=$4 requests=$5 pid=$6 out rps p50 p99 cpu items
  kill -0 "$pid" 2>/dev/null || die "$tool (pid $pid) is gone"
  out=$("${LOAD[@]}" "$sock" bench --path "$path" --requests "$requests" --warmup "$WARMUP" \
    --pid "$pid") || die "$tool: GET $path failed (log $LOG)"
  echo "$tool $what: $out" >>"$LOG"
  read -r rps p50 p99 cpu items < <(fields "$out" rps p50_ms p99_ms cpu_us items)
  say "$tool GET $path: $rps req/s, p50 $p50 ms, p99 $p99 ms, daemon CPU $cpu us/request"
  R[$tool:$what:rps]+=" $rps"
  R[$tool:$what:p50]+=" $p50"
  R[$tool:$what:p99]+=" $p99"
  R[$tool:$what:cpu]+=" $cpu"
  if [ "$what" = list ]; then R[$tool:items]=$items; fi
}

# measure TOOL: one round of both paths.
measure() {
  local tool=$1 sock pid
  if [ "$tool" = dockyard ]; then sock=$DY_SOCK pid=$dy_pid; else sock=$DK_SOCK pid=$dk_pid; fi
  bench "$tool" ping "$sock" "$PING_PATH" "$REQ_PING" "$pid"
  bench "$tool" list "$sock" "${LIST_PATH[$tool]}" "$REQ_LIST" "$pid"
}

populate() { # TOOL SOCKET
  local out
  say "$1: creating $CONTAINERS containers of busybox true and running them to exit"
  out=$("${LOAD[@]}" "$2" populate --label "$LABEL" --count "$CONTAINERS") ||
    die "$1: making the containers failed (log $LOG)"
  echo "$1 populate: $out" >>"$LOG"
}

# --- main -----------------------------------------------------------------------------------

bash "$REPO/contrib/mkimage/busybox.sh" >"$WORK/busybox.tar" 2>>"$LOG" || die "busybox.sh failed"
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)

say "dockyard: starting a daemon on $DY_DATA"
start_dockyard
"${DY[@]}" import -c 'CMD ["sh"]' "$WORK/busybox.tar" busybox:latest >>"$LOG" 2>&1 ||
  die "dockyard import of busybox failed"
read -r dy_version dy_api < <(fields "$("${LOAD[@]}" "$DY_SOCK" version)" Version ApiVersion)
populate dockyard "$DY_SOCK"
tools=(dockyard)
if [ "$WANT_DOCKERD" = 1 ]; then
  setup_dockerd
  dk_pid=$(tr -cd '0-9' <"$DK_RUN/docker.pid")
  if [ -z "$dk_pid" ] || [ "$(cat "/proc/$dk_pid/comm" 2>/dev/null)" != dockerd ]; then
    die "no running dockerd in $DK_RUN/docker.pid"
  fi
  read -r dk_version dk_api < <(fields "$("${LOAD[@]}" "$DK_SOCK" version)" Version ApiVersion)
  populate dockerd "$DK_SOCK"
  tools+=(dockerd)
fi

for round in $(seq "$ROUNDS"); do
  say "round $round of $ROUNDS"
  order=("${tools[@]}")
  if [ $((round % 2)) = 0 ] && [ "${#tools[@]}" = 2 ]; then order=(dockerd dockyard); fi
  for tool in "${order[@]}"; do measure "$tool"; done
done

# --- report ---------------------------------------------------------------------------------

# med TOOL:WHAT:FIGURE: the median over the rounds, or "-".
med() {
  # shellcheck disable=SC2086 # the rounds' figures, one word each
  if [ -n "${R[$1]:-}" ]; then median ${R[$1]}; else echo -; fi
}

fmt() { awk -v v="$1" -v d="$2" 'BEGIN { if (v == "-") print "-"; else printf "%.*f", d, v }'; }

ratio() { # A B: A / B, or "-"
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b <= 0) print "-"; else printf "%.2f", a / b }'
}

# row LABEL WHAT FIGURE DIGITS BETTER: one line of the table.
row() {
  local dy dk
  dy=$(med "dockyard:$2:$3")
  dk=$(med "dockerd:$2:$3")
  printf '%-41s %10s %10s %8s  %s\n' "$1" "$(fmt "$dy" "$4")" "$(fmt "$dk" "$4")" "$(ratio "$dy" "$dk")" "$5"
}

verdict() { # RATIO WANT
  awk -v r="$1" -v w="$2" 'BEGIN { if (r == "-") print "?"; else print (r >= w ? "met" : "NOT met") }'
}

# target NAME WANT WHAT: whether dockyard reaches WANT x dockerd, by req/s and by CPU per request.
target() {
  local by_rate by_cpu
  by_rate=$(ratio "$(med "dockyard:$3:rps")" "$(med "dockerd:$3:rps")")
  by_cpu=$(ratio "$(med "dockerd:$3:cpu")" "$(med "dockyard:$3:cpu")")
  echo "# target: $1 req/s >= ${2}x dockerd's: ${by_rate}x, $(verdict "$by_rate" "$2")" \
    "(by daemon CPU per request, dockerd's/dockyard's: ${by_cpu}x, $(verdict "$by_cpu" "$2"))"
}

mkdir -p "$(dirname "$OUT")"
{
  echo "# bench/api.sh, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "# host: $(uname -sr), $(nproc) CPUs; load average at start: $load_at_start"
  echo "# dockyard: $dy_version (API $dy_api), own daemon on a temp data root"
  if [ "$WANT_DOCKERD" = 1 ]; then
    echo "# dockerd: $dk_version (API $dk_api; bench/dockerd.sh); CPU is dockerd's own PID"
  fi
  echo "# client: bench/apiload.py (python3 http.client), one keep-alive HTTP/1.1 connection on the" \
    "unix socket, sequential requests, $WARMUP warm-up requests"
  echo "# /_ping: GET /_ping, $REQ_PING requests; /containers/json: GET ${LIST_PATH[dockyard]}" \
    "(dockerd 20.10 speaks at most API 1.41: ${LIST_PATH[dockerd]}), $REQ_LIST requests," \
    "$CONTAINERS stopped busybox containers"
  echo "# containers listed: dockyard ${R[dockyard:items]:--}${R[dockerd:items]:+, dockerd ${R[dockerd:items]}}"
  if [ "$WANT_DOCKERD" = 1 ]; then
    echo "# median of $ROUNDS rounds, the daemons taking turns; ratio = dockyard/dockerd"
  else
    echo "# median of $ROUNDS rounds"
  fi
  printf '%-41s %10s %10s %8s  %s\n' metric dockyard dockerd ratio better
  row "/_ping req/s" ping rps 0 "ratio > 1"
  row "/_ping p50 (ms)" ping p50 3 "ratio < 1"
  row "/_ping p99 (ms)" ping p99 3 "ratio < 1"
  row "/_ping daemon CPU per request (us)" ping cpu 1 "ratio < 1"
  row "/containers/json req/s" list rps 0 "ratio > 1"
  row "/containers/json p50 (ms)" list p50 3 "ratio < 1"
  row "/containers/json p99 (ms)" list p99 3 "ratio < 1"
  row "/containers/json daemon CPU per req (us)" list cpu 1 "ratio < 1"
  if [ "$WANT_DOCKERD" = 1 ]; then
    target /_ping "$TARGET_PING" ping
    target "/containers/json ($CONTAINERS containers)" "$TARGET_LIST" list
  fi
} | tee "$OUT"
