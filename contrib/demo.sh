#!/usr/bin/env bash
# Start a dockyard daemon in the background, talk to it, and stop it again.
# Usage: contrib/demo.sh [path/to/dockyard]   (run as root: it uses /run and /var/lib/dockyard)
set -euo pipefail
DOCKYARD=${1:-dockyard}
SOCK=${DOCKYARD_DEMO_SOCK:-/run/dockyard.sock}
LOG=$(mktemp /tmp/dockyard-demo.XXXXXX.log)
export DOCKYARD_HOST="unix://$SOCK"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

"$DOCKYARD" daemon -H "unix://$SOCK" >"$LOG" 2>&1 &
pid=$!
reg_pid=""
REG_DIR=""
stop() {
  if [ -n "$reg_pid" ]; then kill -TERM "$reg_pid" 2>/dev/null || true; wait "$reg_pid" 2>/dev/null || true; fi
  if [ -n "$REG_DIR" ]; then rm -rf "$REG_DIR"; fi
  if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
  echo; echo "daemon stopped; its log: $LOG"
}
trap stop EXIT

for _ in $(seq 100); do
  "$DOCKYARD" version >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { echo "the daemon did not start:"; cat "$LOG"; exit 1; }
  sleep 0.1
done

HERE=$(cd "$(dirname "$0")" && pwd)

step "$DOCKYARD" info
step "$DOCKYARD" jobs ls
step "$DOCKYARD" job commands
step curl -s --unix-socket "$SOCK" http://localhost/jobs -o /dev/null -w 'GET /jobs over the socket: HTTP %{http_code}\n'
if "$DOCKYARD" jobs ls | grep -q '^hello '; then
  step "$DOCKYARD" job hello newcomer
  step "$DOCKYARD" job countdown -p start=3 -p interval=0.2
fi
# A busybox image made from the host's busybox-static (once: later runs reuse it).
if ! "$DOCKYARD" inspect busybox >/dev/null 2>&1; then
  printf '\n\033[1m$ %s\033[0m\n' "contrib/mkimage/busybox.sh | $DOCKYARD import - busybox:latest -c 'CMD [\"sh\"]'"
  "$HERE/mkimage/busybox.sh" | "$DOCKYARD" import - busybox:latest -c 'CMD ["sh"]'
fi
step "$DOCKYARD" images
step "$DOCKYARD" images --tree
step "$DOCKYARD" history busybox
step "$DOCKYARD" jobs history -n 5
# Containers: one in the background, looked at, entered, stopped and removed.
"$DOCKYARD" rm -f demo-web >/dev/null 2>&1 || true
step "$DOCKYARD" run -d --name demo-web busybox sh -c 'i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.5; done'
sleep 1.2
step "$DOCKYARD" ps
step "$DOCKYARD" logs --tail 2 demo-web
step "$DOCKYARD" exec demo-web sh -c 'echo "pid $$ in $(hostname)"; grep CapEff /proc/self/status'
step "$DOCKYARD" top demo-web
step "$DOCKYARD" stop -t 1 demo-web
step "$DOCKYARD" rm demo-web
step "$DOCKYARD" run --rm busybox echo hello from dockyard
# Networking: a web server published on the host's loopback, reached by name on a network.
"$DOCKYARD" rm -f demo-httpd >/dev/null 2>&1 || true
"$DOCKYARD" network rm demo-net >/dev/null 2>&1 || true
step "$DOCKYARD" network create demo-net
step "$DOCKYARD" run -d --name demo-httpd --network demo-net -p 127.0.0.1:0:80 busybox sh -c 'echo "hello over the bridge" > /index.html; httpd -f -p 80 -h /'
step "$DOCKYARD" port demo-httpd
port=$("$DOCKYARD" port demo-httpd 80/tcp | head -1 | sed 's/.*://')
sleep 0.5
step curl -s "http://127.0.0.1:$port/"
step "$DOCKYARD" run --rm --network demo-net busybox wget -q -O - http://demo-httpd/
step "$DOCKYARD" rm -f demo-httpd
step "$DOCKYARD" network rm demo-net
# Registries: a private registry on loopback (Debian's docker-registry), pushed to and pulled from.
if command -v docker-registry >/dev/null; then
  REG_DIR=$(mktemp -d /tmp/dockyard-demo-registry.XXXXXX)
  REG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s/data\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$REG_DIR" "$REG_PORT" >"$REG_DIR/config.yml"
  docker-registry serve "$REG_DIR/config.yml" >"$REG_DIR/log" 2>&1 &
  reg_pid=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$REG_PORT/v2/" >/dev/null && break; sleep 0.1; done
  IMAGE=127.0.0.1:$REG_PORT/demo/busybox:1
  step "$DOCKYARD" tag busybox "$IMAGE"
  step "$DOCKYARD" push "$IMAGE"
  step "$DOCKYARD" rmi "$IMAGE"
  step "$DOCKYARD" pull "$IMAGE"
  step "$DOCKYARD" run --rm "$IMAGE" echo hello from a pulled image
  step "$DOCKYARD" rmi "$IMAGE"
fi
