#!/usr/bin/env bash
# Registry benchmark: how long pull and push of a ~200 MB two-layer image take over loopback.
#
#   bench/pull.sh [--dockerd] [--no-dockyard] [--runs N] [--keep] [--out FILE]
#
#   --dockerd      also time dockerd (docker pull / push) and print the ratios dockyard/dockerd.
#                  Uses $DOCKER_HOST, else the private daemon of bench/dockerd.sh, which is
#                  started (and stopped at the end) when not running. Without the flag dockerd
#                  is timed too when $DOCKER_HOST answers.
#   --no-dockyard  time dockerd (and skopeo) only
#   --runs N       runs per operation, the median is reported (default 5)
#   --keep         keep the dockyard bench daemon's data root afterwards (default: removed)
#   --out FILE     where the report goes besides stdout
#                  (default bench/results/pull.txt)
#
# The registry is Debian's docker-registry (distribution 2.8) on 127.0.0.1 and a free port,
# storage in a temp dir, started and stopped here by PID. It is seeded by bench/pushimage.py
# with the layers of bench/mkbenchimage.py --seed 2 (made once, kept in $BENCH_DIR/pull) as one
# gzip image (level 6): 127.0.0.1:PORT/bench/pull:latest. Seed 2, not the seed 1 of images.sh:
# a daemon holding images.sh's layers (or any other image made of them) would make its pulls
# warm. What is timed (wall clock, through each CLI):
#   pull    cold: before every run the image is removed and it is checked that its layers are
#           gone. dockyard, dockerd and `skopeo copy docker://… oci:DIR` (when installed) take
#           turns run by run. MB/s = compressed bytes (manifest: layers + config) / median.
#   push    the pulled image tagged 127.0.0.1:PORT/bench/push:latest, pushed to a FRESH registry
#           (stopped, storage wiped, started again on the same port, untimed) every run. The
#           first push of each daemon is reported on its own: dockyard gzips its layers then and
#           keeps the blobs, later pushes upload those; dockerd compresses on every upload.
#   again   the same push once more to the same registry: every blob is there already.
# dockyard is timed against a daemon of its own, started and stopped here by PID: --data-root
# /var/lib/dockyard-bench-pull -H unix:///run/dockyard-bench-pull.sock, default bridge dypull0
# without iptables rules (no container runs). Needs root. Environment: DOCKYARD (dockyard
# executable), DOCKER (docker client), REGISTRY_BIN (docker-registry), SKOPEO.
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME and awk with a "." decimal point

PROG=${0##*/}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
BENCH_DIR=${BENCH_DIR:-/var/tmp/dockyard-bench}
IMAGE_DIR=$BENCH_DIR/pull
SEED=2
DY_SOCK=/run/dockyard-bench-pull.sock
DY_DATA=/var/lib/dockyard-bench-pull
DY_EXEC=/run/dockyard-bench-pull
DY_BRIDGE=dypull0
DY_BIP=10.217.0.1/24
PULL_REPO=bench/pull
PUSH_REPO=bench/push
TAG=latest
GZIP_LEVEL=6
MANIFEST_TYPES="application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES="$MANIFEST_TYPES, application/vnd.oci.image.manifest.v1+json"
TARGET_PULL_DOCKERD=0.7 # dockyard pull, at most this times docker pull
TARGET_PULL_SKOPEO=2    # dockyard pull, at most this times skopeo copy
TARGET_PUSH_DOCKERD=1   # dockyard push, at most this times docker push

RUNS=5
WANT_DOCKERD=0
WANT_DOCKYARD=1
KEEP=0
OUT=$HERE/results/pull.txt

# --- lib.sh: median, unmount_under, stop_dockyard (by its PID). This script's daemon runs no
# container, so it has its own start_dockyard, setup_dockerd and cleanup, defined below.
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

usage() { sed -n '2,33s/^# \{0,1\}//p' "$0"; }
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
    --runs | --out)
      [ $# -ge 2 ] || die "$1 needs a value"
      if [ "$1" = --runs ]; then RUNS=$2; else OUT=$2; fi
      shift
      ;;
    --runs=*) RUNS=${1#--runs=} ;;
    --out=*) OUT=${1#--out=} ;;
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
REGISTRY_BIN=${REGISTRY_BIN:-docker-registry}
SKOPEO=${SKOPEO:-skopeo}
command -v "$REGISTRY_BIN" >/dev/null ||
  die "$REGISTRY_BIN is not installed (apt-get install docker-registry)"
command -v curl >/dev/null || die "curl is not installed"

LOG=$(mktemp /tmp/bench-pull.XXXXXX.log)
WORK=$(mktemp -d /var/tmp/dockyard-bench-pull.XXXXXX)
REG_DIR=$WORK/registry # config.yml, storage/, registry.log
OCI_DIR=$WORK/oci      # skopeo's copies
dy_pid=""
reg_pid=""
reg_port=""
started_dockerd=0
dockerd_in_use=0
made_bridge=0

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$dy_pid" ]; then stop_pull_daemon || rc=1; fi
  remove_bridge || rc=1
  if [ -n "$reg_pid" ]; then stop_registry; fi
  if [ "$dockerd_in_use" = 1 ] && [ "$started_dockerd" = 0 ] && [ -n "$reg_port" ]; then
    # A dockerd that ran already keeps running: only the images of this run are removed.
    quiet "$DOCKER" rmi "$(ref "$PUSH_REPO")" "$(ref "$PULL_REPO")"
  fi
  if [ "$started_dockerd" = 1 ]; then "$HERE/dockerd.sh" stop >>"$LOG" 2>&1 || rc=1; fi
  rm -rf --one-file-system "$WORK"
  if [ "$rc" = 0 ]; then rm -f "$LOG"; else say "log of the commands: $LOG"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

quiet() { "$@" >>"$LOG" 2>&1 || true; }

# --- the image ------------------------------------------------------------------------------

make_image() {
  local stamp want
  want="$(sha256sum "$HERE/mkbenchimage.py" | cut -d' ' -f1) seed $SEED"
  stamp=$(cat "$IMAGE_DIR/stamp" 2>/dev/null || true)
  if [ "$stamp" = "$want" ] && [ -s "$IMAGE_DIR/layer1.tar" ] && [ -s "$IMAGE_DIR/layer2.tar" ]; then
    return
  fi
  say "generating the bench image (seed $SEED) in $IMAGE_DIR"
  mkdir -p "$IMAGE_DIR"
  python3 "$HERE/mkbenchimage.py" "$IMAGE_DIR" --seed "$SEED" >&2
  # Only the layers are used here.
  rm -f "$IMAGE_DIR/image.tar" "$IMAGE_DIR/rootfs.tar"
  echo "$want" >"$IMAGE_DIR/stamp"
}

# --- the registry ---------------------------------------------------------------------------

ref() { echo "127.0.0.1:$reg_port/$1:$TAG"; } # REPO: the reference of REPO's tag

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_registry() {
  mkdir -p "$REG_DIR/storage"
  cat >"$REG_DIR/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REG_DIR/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$reg_port
EOF
  "$REGISTRY_BIN" serve "$REG_DIR/config.yml" >>"$REG_DIR/registry.log" 2>&1 &
  reg_pid=$!
  local i
  for i in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$reg_port/v2/" 2>/dev/null && return 0
    if ! kill -0 "$reg_pid" 2>/dev/null; then
      reg_pid=""
      tail -n 15 "$REG_DIR/registry.log" >&2
      die "the registry did not start on 127.0.0.1:$reg_port"
    fi
    [ "$i" = 100 ] && die "the registry did not answer on 127.0.0.1:$reg_port within 10 s"
    sleep 0.1
  done
}

stop_registry() {
  local i
  [ -n "$reg_pid" ] || return 0
  kill -TERM "$reg_pid" 2>/dev/null || true
  for i in $(seq 100); do
    kill -0 "$reg_pid" 2>/dev/null || break
    [ "$i" = 100 ] && kill -KILL "$reg_pid" 2>/dev/null
    sleep 0.1
  done
  wait "$reg_pid" 2>/dev/null || true
  reg_pid=""
}

# The registry stopped, its storage wiped, started again on the same port: nothing in it.
fresh_registry() {
  stop_registry
  rm -rf --one-file-system "$REG_DIR/storage"
  start_registry
}

manifest() { # REPO: the manifest of REPO's tag
  curl -fsS -H "Accept: $MANIFEST_TYPES" "http://127.0.0.1:$reg_port/v2/$1/manifests/$TAG"
}

# json EXPR: EXPR evaluated with m = the JSON document on stdin, printed.
json() { python3 -c "import json, sys; m = json.load(sys.stdin); print($1)"; }

# image_bytes REPO: the compressed bytes of REPO's image (layers + config, by its manifest),
# after checking that the registry holds every blob the manifest names.
image_bytes() {
  local m digest
  m=$(manifest "$1") || die "registry: no manifest for $1:$TAG"
  for digest in $(json '" ".join([m["config"]["digest"]] + [l["digest"] for l in m["layers"]])' <<<"$m"); do
    curl -fsS -o /dev/null -I "http://127.0.0.1:$reg_port/v2/$1/blobs/$digest" ||
      die "registry: $1 lacks blob $digest its manifest names"
  done
  json 'm["config"]["size"] + sum(l["size"] for l in m["layers"])' <<<"$m"
}

first_diff_id() { # the diff_id of the pushed image's first layer, from its config
  local m config
  m=$(manifest "$PULL_REPO")
  config=$(json 'm["config"]["digest"]' <<<"$m")
  curl -fsS "http://127.0.0.1:$reg_port/v2/$PULL_REPO/blobs/$config" | json 'm["rootfs"]["diff_ids"][0]'
}

seed_registry() {
  fresh_registry
  python3 "$HERE/pushimage.py" "127.0.0.1:$reg_port" "$PULL_REPO:$TAG" \
    "$IMAGE_DIR/layer1.tar" "$IMAGE_DIR/layer2.tar" --level "$GZIP_LEVEL" >>"$LOG" 2>&1 ||
    die "bench/pushimage.py could not push the image (log $LOG)"
}

# --- timing ---------------------------------------------------------------------------------

declare -A TIMES=()  # TOOL:OP -> " s1 s2 ..."
declare -A PUSHED=() # TOOL -> compressed bytes of the image its push left in the registry

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

# --- dockyard -------------------------------------------------------------------------------

DY=("$DOCKYARD" -H "unix://$DY_SOCK")
DY_BASE="" # `images -a -q` of the fresh daemon: what must be left after every rmi

start_dockyard() {
  if "${DY[@]}" version >/dev/null 2>&1; then
    die "a daemon already answers on $DY_SOCK; stop it first"
  fi
  if ip link show "$DY_BRIDGE" >/dev/null 2>&1; then
    die "the bridge $DY_BRIDGE exists already (another bench/pull.sh running?)"
  fi
  if [ -e "$DY_DATA" ]; then
    # Only this script makes it (left by --keep): its images would make the pulls warm.
    say "removing $DY_DATA, left by an earlier run"
    unmount_under "$DY_DATA"
    rm -rf --one-file-system "$DY_DATA"
  fi
  mkdir -p "$DY_DATA" "$DY_EXEC"
  made_bridge=1
  "$DOCKYARD" daemon -H "unix://$DY_SOCK" --data-root "$DY_DATA" --exec-root "$DY_EXEC" \
    --bridge "$DY_BRIDGE" --bip "$DY_BIP" --iptables=false --ip-forward=false --ip-masq=false \
    >>"$LOG" 2>&1 &
  dy_pid=$!
  local i
  for i in $(seq 200); do
    if "${DY[@]}" version >/dev/null 2>&1; then
      DY_BASE=$(dy_ids)
      return 0
    fi
    kill -0 "$dy_pid" 2>/dev/null || {
      dy_pid=""
      tail -n 15 "$LOG" >&2
      die "the dockyard daemon did not start"
    }
    [ "$i" = 200 ] && die "the dockyard daemon did not answer within 20 s"
    sleep 0.1
  done
}

stop_pull_daemon() {
  stop_dockyard
  rm -f "$DY_SOCK"
  unmount_under "$DY_EXEC"
  unmount_under "$DY_DATA"
  rm -rf --one-file-system "$DY_EXEC"
  if [ "$KEEP" = 0 ]; then rm -rf --one-file-system "$DY_DATA"; fi
  remove_bridge
}

# The daemon deletes its bridge when it stops; one it left (or a daemon that failed to start
# left) is deleted here.
remove_bridge() {
  local status=0
  if [ "$made_bridge" = 1 ] && ip link show "$DY_BRIDGE" >/dev/null 2>&1; then
    say "warning: the dockyard daemon left its bridge $DY_BRIDGE; deleting it"
    ip link delete "$DY_BRIDGE" || status=1
  fi
  made_bridge=0
  return "$status"
}

dockyard_has_registry_commands() {
  local c
  for c in pull push tag rmi; do
    "$DOCKYARD" "$c" --help >/dev/null 2>&1 || return 1
  done
}

dy_ids() { "${DY[@]}" images -a -q | sort -u; }

# The pulled image removed, and checked: no image id and no layer tar left of it.
dy_remove() {
  local left tars
  "${DY[@]}" rmi "$(ref "$PULL_REPO")" >>"$LOG" 2>&1 || die "dockyard rmi $(ref "$PULL_REPO") failed"
  left=$(comm -13 <(echo "$DY_BASE") <(dy_ids))
  [ -z "$left" ] || die "dockyard rmi left images: $(echo "$left" | tr '\n' ' ')"
  tars=$(find "$DY_DATA/layertars" -name '*.tar' 2>/dev/null | wc -l)
  [ "$tars" = 0 ] || die "dockyard rmi left $tars layer tars in $DY_DATA/layertars"
}

dy_pull() { # run I
  if [ "$1" -gt 1 ]; then dy_remove; fi
  timed dockyard pull "${DY[@]}" pull -q "$(ref "$PULL_REPO")"
}

# --- dockerd --------------------------------------------------------------------------------

DIFF_ID="" # the first layer's diff_id: no dockerd image may hold it before a cold pull

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

# The ids of dockerd's images that hold the layer DIFF_ID, one per line.
dk_holding() {
  local ids
  ids=$("$DOCKER" images -a -q --no-trunc | sort -u)
  [ -n "$ids" ] || return 0
  # shellcheck disable=SC2086  # image ids, no blanks
  "$DOCKER" image inspect --format '{{.Id}}{{range .RootFS.Layers}} {{.}}{{end}}' $ids |
    awk -v d="$DIFF_ID" 'index($0, d) { print $1 }'
}

# The pulled image removed, and checked: no dockerd image holds its first layer any more.
dk_remove() {
  local left
  "$DOCKER" rmi "$(ref "$PULL_REPO")" >>"$LOG" 2>&1 || die "docker rmi $(ref "$PULL_REPO") failed"
  # Only on a dockerd of this run's own: prune would take other people's dangling images too.
  if [ "$started_dockerd" = 1 ]; then quiet "$DOCKER" image prune -f; fi
  left=$(dk_holding)
  [ -z "$left" ] || die "after docker rmi, dockerd still has the layers (images $left)"
}

dk_pull() { # run I
  if [ "$1" -gt 1 ]; then dk_remove; fi
  timed dockerd pull "$DOCKER" pull -q "$(ref "$PULL_REPO")"
}

# --- skopeo ---------------------------------------------------------------------------------

sk_pull() {
  rm -rf --one-file-system "$OCI_DIR"
  timed skopeo pull "$SKOPEO" copy -q --insecure-policy --src-tls-verify=false \
    "docker://$(ref "$PULL_REPO")" "oci:$OCI_DIR:$TAG"
}

# --- push -----------------------------------------------------------------------------------

# push_run TOOL OP CLI...: a fresh registry, one timed push of bench/push (as OP) and, unless
# OP is push1, one more to the same registry (as push2); the registry checked after each.
push_run() {
  local tool=$1 op=$2
  shift 2
  fresh_registry
  timed "$tool" "$op" "$@" push -q "$(ref "$PUSH_REPO")"
  PUSHED[$tool]=$(image_bytes "$PUSH_REPO")
  if [ "$op" != push1 ]; then
    timed "$tool" push2 "$@" push -q "$(ref "$PUSH_REPO")"
    image_bytes "$PUSH_REPO" >/dev/null
  fi
}

# --- main -----------------------------------------------------------------------------------

make_image
run_dockyard=0
run_dockerd=0
run_skopeo=0
if [ "$WANT_DOCKYARD" = 1 ]; then
  if dockyard_has_registry_commands; then
    run_dockyard=1
  else
    say "$DOCKYARD has no pull/push/tag/rmi commands yet: skipping dockyard"
  fi
fi
# shellcheck disable=SC2119 # this script's own setup_dockerd (not lib.sh's) takes no argument
if setup_dockerd; then
  run_dockerd=1
  dockerd_in_use=1
fi
if command -v "$SKOPEO" >/dev/null; then run_skopeo=1; else say "no $SKOPEO: skipping skopeo"; fi
[ "$run_dockyard" = 1 ] || [ "$run_dockerd" = 1 ] || die "nothing to time (no dockyard pull/push, no dockerd)"

reg_port=$(free_port)
seed_registry
IMAGE_BYTES=$(image_bytes "$PULL_REPO")
DIFF_ID=$(first_diff_id)

mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
{
  echo "# bench/pull.sh, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "# host: $(uname -sr), $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1e6 }' /proc/meminfo) RAM," \
    "registry storage on $(findmnt -no FSTYPE -T "$WORK")"
  echo "# registry: $("$REGISTRY_BIN" --version 2>/dev/null | awk '{ print $1, $3 }') at 127.0.0.1:$reg_port," \
    "plain HTTP, filesystem storage"
  echo "# image $(ref "$PULL_REPO"): $(mb "$IMAGE_BYTES") compressed (bench/pushimage.py, gzip level" \
    "$GZIP_LEVEL) of layer1 $(mb "$(stat -c %s "$IMAGE_DIR/layer1.tar")") + layer2" \
    "$(mb "$(stat -c %s "$IMAGE_DIR/layer2.tar")") (bench/mkbenchimage.py --seed $SEED, incompressible)"
  echo "# runs per operation: $RUNS (median reported), the tools taking turns run by run;" \
    "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$WORK/head"

if [ "$run_dockyard" = 1 ]; then
  start_dockyard
  echo "# dockyard: $("$DOCKYARD" --version 2>/dev/null | head -n 1), own daemon, data root $DY_DATA;" \
    "timed through its CLI (Python client start-up included)" >>"$WORK/head"
fi
if [ "$run_dockerd" = 1 ]; then
  quiet "$DOCKER" rmi "$(ref "$PUSH_REPO")" "$(ref "$PULL_REPO")"
  left=$(dk_holding)
  [ -z "$left" ] || die "dockerd holds the bench layers already (images $left): the pulls would not be cold"
  echo "# dockerd: $("$DOCKER" version --format '{{.Server.Version}}') at $DOCKER_HOST," \
    "storage driver $("$DOCKER" info --format '{{.Driver}}')" >>"$WORK/head"
fi
if [ "$run_skopeo" = 1 ]; then
  echo "# skopeo: $("$SKOPEO" --version | awk '{ print $3 }'), copy docker://… oci:DIR (keeps the" \
    "gzip blobs as they are: download, verify, write)" >>"$WORK/head"
fi

say "pull: $RUNS cold runs each"
for i in $(seq "$RUNS"); do
  if [ "$run_dockyard" = 1 ]; then dy_pull "$i"; fi
  if [ "$run_dockerd" = 1 ]; then dk_pull "$i"; fi
  if [ "$run_skopeo" = 1 ]; then sk_pull; fi
done
rm -rf --one-file-system "$OCI_DIR"

say "push: a first push each, then $RUNS to fresh registries, each followed by a push again"
if [ "$run_dockyard" = 1 ]; then
  "${DY[@]}" tag "$(ref "$PULL_REPO")" "$(ref "$PUSH_REPO")" >>"$LOG" 2>&1 || die "dockyard tag failed"
  push_run dockyard push1 "${DY[@]}"
fi
if [ "$run_dockerd" = 1 ]; then
  "$DOCKER" tag "$(ref "$PULL_REPO")" "$(ref "$PUSH_REPO")" >>"$LOG" 2>&1 || die "docker tag failed"
  push_run dockerd push1 "$DOCKER"
fi
for i in $(seq "$RUNS"); do
  if [ "$run_dockyard" = 1 ]; then push_run dockyard push "${DY[@]}"; fi
  if [ "$run_dockerd" = 1 ]; then push_run dockerd push "$DOCKER"; fi
done

if [ "$run_dockyard" = 1 ]; then stop_pull_daemon; fi
if [ "$run_dockerd" = 1 ]; then
  "$DOCKER" rmi "$(ref "$PUSH_REPO")" "$(ref "$PULL_REPO")" >>"$LOG" 2>&1 ||
    die "docker rmi of the bench images failed"
fi

# --- report ---------------------------------------------------------------------------------

med() { # TOOL OP: the median of its runs, or -
  # Word splitting of the recorded times is intended.
  # shellcheck disable=SC2086
  if [ -n "${TIMES[$1:$2]:-}" ]; then median ${TIMES[$1:$2]}; else echo -; fi
}
ratio() { # A B: A / B, or -
  if [ "$1" = - ] || [ "$2" = - ]; then
    echo -
  else
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
  fi
}
rate() { # BYTES SECONDS: MB/s, or -
  if [ -z "$1" ] || [ "$2" = - ]; then echo -; else awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / 1e6 / s }'; fi
}
target() { # NAME RATIO LIMIT
  local verdict
  if [ "$2" = - ]; then
    echo "# target: $1 <= ${3}x: not measured"
    return
  fi
  verdict=$(awk -v r="$2" -v l="$3" 'BEGIN { print (r <= l) ? "met" : "NOT met" }')
  echo "# target: $1 <= ${3}x: ${2}x, $verdict"
}

mkdir -p "$(dirname "$OUT")"
{
  cat "$WORK/head"
  printf '%-30s %12s %6s %11s %16s %10s %15s\n' operation "dockyard (s)" "MB/s" "dockerd (s)" \
    "dockyard/dockerd" "skopeo (s)" "dockyard/skopeo"
  for op in pull push1 push push2; do
    case $op in
      pull) label="pull (cold)" ;;
      push1) label="push, first (gzip made now)" ;;
      push) label="push (fresh registry)" ;;
      push2) label="push again (blobs there)" ;;
    esac
    dy=$(med dockyard "$op")
    dk=$(med dockerd "$op")
    sk=$(med skopeo "$op")
    case $op in
      pull) bytes=$IMAGE_BYTES ;;
      push1 | push) bytes=${PUSHED[dockyard]:-} ;;
      *) bytes="" ;;
    esac
    printf '%-30s %12s %6s %11s %16s %10s %15s\n' "$label" "$dy" "$(rate "$bytes" "$dy")" "$dk" \
      "$(ratio "$dy" "$dk")" "$sk" "$(ratio "$dy" "$sk")"
  done
  target "dockyard pull / docker pull" "$(ratio "$(med dockyard pull)" "$(med dockerd pull)")" "$TARGET_PULL_DOCKERD"
  target "dockyard pull / skopeo copy" "$(ratio "$(med dockyard pull)" "$(med skopeo pull)")" "$TARGET_PULL_SKOPEO"
  target "dockyard push / docker push (fresh registry, dockyard's gzip blobs cached)" \
    "$(ratio "$(med dockyard push)" "$(med dockerd push)")" "$TARGET_PUSH_DOCKERD"
  target "dockyard first push (gzip made now) / docker push (fresh registry)" \
    "$(ratio "$(med dockyard push1)" "$(med dockerd push)")" "$TARGET_PUSH_DOCKERD"
  echo "# MB/s: compressed bytes / median; pull: the seeded image ($IMAGE_BYTES bytes); push: what" \
    "dockyard's push left in the registry"
  for tool in dockyard dockerd; do
    if [ -n "${PUSHED[$tool]:-}" ]; then
      echo "#   $tool push: $(mb "${PUSHED[$tool]}") compressed in the registry"
    fi
  done
  echo "# push: each run to a freshly started empty registry. 'first': the daemon's first push"
  echo "#   (dockyard gzips at level 1 and caches the blobs, its later pushes upload the cached"
  echo "#   blobs; dockerd keeps no compressed blobs and gzips on every upload)."
  echo "#   'again': a second push to the same registry right after, every blob there already."
  echo "# all runs (s):"
  for key in dockyard:pull dockerd:pull skopeo:pull dockyard:push1 dockerd:push1 dockyard:push \
    dockerd:push dockyard:push2 dockerd:push2; do
    if [ -n "${TIMES[$key]:-}" ]; then echo "#   $key:${TIMES[$key]}"; fi
  done
} | tee "$OUT"
say "saved in $OUT"
