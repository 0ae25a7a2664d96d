#!/usr/bin/env bash
# The demo: a local ZooKeeper and three pods of examples/web-cluster forming one cluster.
#
# It builds the agent, starts a throw-away ZooKeeper (installing Debian's package if needed),
# starts three agents on 127.0.0.1 (control ports 8081-8083, web ports 9001-9003), waits until
# every pod runs and one leads, prints the cluster as a table and each pod's rendered
# members.txt, then shows a live view (`ochopod watch`). Ctrl-C stops everything cleanly.
#
#   DEMO_EXIT_AFTER_READY=1 scripts/demo.sh   # stop once the cluster is up (for scripts and CI)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${DEMO_DIR:-$ROOT/target/demo}
N=${DEMO_PODS:-3}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
start_ts=$(date +%s.%N)

say "building the agent (cargo build -p ochopod-cli)"
cargo build -q -p ochopod-cli
BIN=$ROOT/target/debug/ochopod
[ -n "${CARGO_TARGET_DIR:-}" ] && BIN=$CARGO_TARGET_DIR/debug/ochopod

rm -rf "$WORK"
mkdir -p "$WORK"
pids=()
cleanup() {
  trap - INT TERM EXIT
  say "stopping the pods (SIGTERM: each leaves the cluster, then stops its process)"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  scripts/zk.sh stop "$WORK/zk"
  say "stopped"
}
trap cleanup INT TERM EXIT

say "starting ZooKeeper"
read -r ZK_PORT _ < <(scripts/zk.sh start "$WORK/zk" 0 200)
ZK=127.0.0.1:$ZK_PORT
say "ZooKeeper on $ZK"

build_done=$(date +%s.%N)
for i in $(seq 1 "$N"); do
  dir=$WORK/pod$i
  mkdir -p "$dir"
  cp examples/web-cluster/pod.toml examples/web-cluster/members.txt.j2 "$dir/"
  "$BIN" run --spec "$dir/pod.toml" --zk "$ZK" \
    --set "ports.\"8080\"=$((8080 + i))" --set "ports.\"9000\"=$((9000 + i))" \
    > "$dir/agent.log" 2>&1 &
  pids+=($!)
done
say "started $N agents (logs in $WORK/pod*/agent.log)"

# Wait until every pod runs and exactly one leads.
for _ in $(seq 1 600); do
  out=$("$BIN" ls demo.web --zk "$ZK" --json 2>/dev/null || echo '[]')
  if python3 - "$N" "$out" <<'PY'
import json, sys
n, rows = int(sys.argv[1]), json.loads(sys.argv[2])
running = [r for r in rows if r["process"] == "running"]
leaders = [r for r in rows if r["state"] == "leader"]
sys.exit(0 if len(rows) == n and len(running) == n and len(leaders) == 1 else 1)
PY
  then break; fi
  sleep 0.1
done
ready=$(date +%s.%N)
"$BIN" ls --zk "$ZK"
for i in $(seq 1 "$N"); do
  echo "--- pod$i: http://127.0.0.1:$((9000 + i))/members.txt"
  cat "$WORK/pod$i/www/members.txt"
done
python3 -c "print('cluster running %.2f s after the agents started (%.1f s with the build)' % ($ready - $build_done, $ready - $start_ts))" >&2

if [ -n "${DEMO_EXIT_AFTER_READY:-}" ]; then exit 0; fi
say "live view (kill a pod in another terminal: kill -9 ${pids[1]}); Ctrl-C to stop"
"$BIN" watch --zk "$ZK"
