#!/usr/bin/env bash
# One command to see Ochopod at work in Docker: builds the images (the first time from Debian's
# packages, a few minutes), then starts on a private network `ochopod-demo`:
#   - ochopod-demo-zk           the coordination ZooKeeper every pod registers in
#   - ochopod-demo-zk1..3       a ZooKeeper ensemble whose members configure each other
#   - ochopod-demo-web1..N      a web tier (each serves its own name on :9000)
#   - ochopod-demo-lb           HAProxy on :80 in front of the web tier, reloaded as it changes
# then waits until every pod runs and prints the clusters.
#
#   docker/up.sh              bring it up (3 web pods), or bring it back to 3 web pods
#   docker/up.sh --web 5      scale the web tier to 5 (then to 1 ...): watch the balancer follow
#   docker/up.sh --no-build   skip scripts/docker-build.sh (images already built)
#   docker/down.sh            remove it all
#
# The balancer is published on 127.0.0.1:${OCHOPOD_DEMO_PORT:-8000} when that port is free.
set -euo pipefail
cd "$(dirname "$0")/.."
NET=ochopod-demo
NS=demo
WEB=3
BUILD=1
while [ $# -gt 0 ]; do
  case $1 in
    --web) WEB=${2:?--web needs a number}; shift 2 ;;
    --no-build) BUILD=""; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "docker/up.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case $WEB in ''|*[!0-9]*) echo "docker/up.sh: --web takes a number, not '$WEB'" >&2; exit 2 ;; esac

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
exists() { docker container inspect "$1" >/dev/null 2>&1; }

[ -n "$BUILD" ] && scripts/docker-build.sh

if ! docker network inspect "$NET" >/dev/null 2>&1; then
  # An explicit subnet, so containers keep their address across a disconnect.
  for third in $(seq 200 250); do
    docker network create --subnet "10.214.$third.0/24" --label ochopod.demo=1 "$NET" >/dev/null 2>&1 && break
  done
  docker network inspect "$NET" >/dev/null 2>&1 || { echo "docker/up.sh: cannot create network $NET" >&2; exit 1; }
  say "network $NET"
fi

run() { # name image [docker run options...] -- [args...]
  local name=$1 image=$2; shift 2
  if exists "$name"; then
    docker start "$name" >/dev/null
    return
  fi
  local opts=() args=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  args=("$@")
  docker run -d --name "$name" --hostname "${name#ochopod-demo-}" --network "$NET" \
    --label ochopod.demo=1 "${opts[@]}" "$image" "${args[@]}" >/dev/null
  say "started $name"
}
ip_of() { docker inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$1"; }

run ochopod-demo-zk ochopod/zookeeper:latest --entrypoint /usr/local/bin/zk-run.sh -- standalone 200
ZK=$(ip_of ochopod-demo-zk):2181
for _ in $(seq 1 300); do
  [ "$(docker exec ochopod-demo-zk python3 -c "
import socket; s = socket.create_connection(('127.0.0.1', 2181)); s.sendall(b'ruok'); print(s.recv(8).decode())" 2>/dev/null)" = imok ] && break
  sleep 0.2
done
say "coordination ZooKeeper at $ZK"

POD=(-e "ochopod_namespace=$NS" -e "ochopod_zk=$ZK")
for i in 1 2 3; do run "ochopod-demo-zk$i" ochopod/zookeeper:latest "${POD[@]}"; done
for i in $(seq 1 "$WEB"); do run "ochopod-demo-web$i" ochopod/web:latest "${POD[@]}"; done
# Scale down: web pods above N leave (docker stop: each leaves ZooKeeper at once).
for name in $(docker ps -a --filter label=ochopod.demo=1 --format '{{.Names}}' | grep -E '^ochopod-demo-web[0-9]+$' || true); do
  if [ "${name#ochopod-demo-web}" -gt "$WEB" ]; then docker rm -f "$(docker stop "$name")" >/dev/null; say "removed $name"; fi
done
PUBLISH=()
PORT=${OCHOPOD_DEMO_PORT:-8000}
if ! exists ochopod-demo-lb && python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', $PORT))" 2>/dev/null; then
  PUBLISH=(-p "127.0.0.1:$PORT:80")
fi
run ochopod-demo-lb ochopod/haproxy:latest "${POD[@]}" "${PUBLISH[@]}"

# The operator CLI is in every image; the coordination ZooKeeper's container runs it.
ochopod() { docker exec ochopod-demo-zk ochopod "$@"; }
ls_json() { ochopod ls "demo.*" --zk "$ZK" --json 2>/dev/null || echo '[]'; }
say "waiting for every pod to run (the ensemble waits for its three members)"
want=$((3 + WEB + 1))
ok=""
for _ in $(seq 1 300); do
  dead=$(docker ps -a --filter label=ochopod.demo=1 --filter status=exited --format '{{.Names}}')
  if [ -n "$dead" ]; then
    for d in $dead; do echo "--- $d exited:" >&2; docker logs --tail 20 "$d" >&2; done
    echo "docker/up.sh: some containers exited (logs above)" >&2; exit 1
  fi
  if ls_json | python3 -c "
import json, sys
rows = json.load(sys.stdin)
running = [r for r in rows if r.get('process') == 'running']
leaders = {r['cluster'] for r in rows if r.get('state') == 'leader'}
sys.exit(0 if len(rows) == $want and len(running) == $want and len(leaders) == 3 else 1)"; then ok=1; break; fi
  sleep 1
done
ochopod ls --zk "$ZK"
[ -n "$ok" ] || { echo "docker/up.sh: not every pod runs yet; see docker logs <container>" >&2; exit 1; }

LB=$(ip_of ochopod-demo-lb)
echo
echo "Through the balancer (http://$LB/):"
for _ in $(seq 1 "$WEB"); do python3 -c "import urllib.request; print('  ' + urllib.request.urlopen('http://$LB/').read().decode().strip())"; done
[ ${#PUBLISH[@]} -gt 0 ] && echo "  also published on http://127.0.0.1:$PORT/"
cat <<MSG

ZooKeeper ensemble: $(for i in 1 2 3; do printf '%s:2181 ' "$(ip_of "ochopod-demo-zk$i")"; done)
Try:
  docker exec ochopod-demo-zk ochopod ls --zk $ZK       # the clusters
  docker/up.sh --no-build --web 5                         # scale the web tier; the balancer follows
  docker kill ochopod-demo-web1                           # a pod dies; the tier reconfigures
  docker/down.sh                                          # remove everything
MSG
