#!/usr/bin/env bash
# The demo: a local ZooKeeper and three pods of examples/web-cluster forming one cluster.
#
# It builds the agent, starts a throw-away ZooKeeper (installing Debian's package if needed),
# starts three agents on 127.0.0.1 one after the other, so that the folder of pod N (pod0,
# pod1, pod2) is the pod `ochopod ls` shows as #N (its seq: 0, 1, 2 in a fresh cluster),
# waits until every pod runs and one leads, prints the cluster as a table and each pod's
# rendered members.txt, then shows a live view (`ochopod watch`). Ctrl-C (or SIGTERM, or the
# terminal closing) stops everything: the agents, their web servers and ZooKeeper, also when
# the output goes through a pipe whose reader died first (`scripts/demo.sh | tee log`).
#
#   DEMO_EXIT_AFTER_READY=1 scripts/demo.sh   # stop once the cluster is up (for scripts and CI)
#
# Other settings: DEMO_DIR (default target/demo), DEMO_PODS (3), DEMO_CONTROL_PORTS and
# DEMO_WEB_PORTS (one port per pod, default 8081 8082 8083 and 9001 9002 9003), OCHOPOD_BIN
# (an agent binary to use instead of building one).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${DEMO_DIR:-$ROOT/target/demo}
N=${DEMO_PODS:-3}
read -r -a CONTROL_PORTS <<< "${DEMO_CONTROL_PORTS:-$(seq -s ' ' 8081 $((8080 + N)))}"
read -r -a WEB_PORTS <<< "${DEMO_WEB_PORTS:-$(seq -s ' ' 9001 $((9000 + N)))}"
if [ "${#CONTROL_PORTS[@]}" -lt "$N" ] || [ "${#WEB_PORTS[@]}" -lt "$N" ]; then
  echo "demo.sh: DEMO_CONTROL_PORTS and DEMO_WEB_PORTS need $N ports each" >&2
  exit 2
fi

# A reader of our output that went away (`scripts/demo.sh | tee log`, tee killed by the same
# Ctrl-C) must not kill the script before it has stopped what it started: writes then fail
# with EPIPE instead of raising SIGPIPE, and `say` ignores the failure.
trap '' PIPE
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2 || true; }
start_ts=$(date +%s.%N)

if [ -n "${OCHOPOD_BIN:-}" ]; then
  BIN=$OCHOPOD_BIN
else
  say "building the agent (cargo build -p ochopod-cli)"
  cargo build -q -p ochopod-cli
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/ochopod
fi

rm -rf "$WORK"
mkdir -p "$WORK"
pids=()
watcher=
stop() { # exit code
  # Whatever happens to the terminal or the pipe we write to, the stop goes on to the end: no
  # second Ctrl-C, no SIGPIPE and no failing command interrupts it.
  trap '' INT TERM HUP
  trap - EXIT
  set +e
  say "stopping the pods (SIGTERM: each leaves the cluster, then stops its process) and ZooKeeper"
  [ -n "$watcher" ] && kill -TERM "$watcher" 2>/dev/null
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  [ -n "$watcher" ] && wait "$watcher" 2>/dev/null
  scripts/zk.sh stop "$WORK/zk"
  say "stopped"
  exit "$1"
}
trap 'stop 130' INT
trap 'stop 143' TERM
trap 'stop 129' HUP
trap 'stop $?' EXIT

# Count the pods of demo.web that registered; with `running`, those running, and whether
# exactly one leads (exit 0 only when there are $1 of them, all running, one leader).
pods_up() { # count [running]
  local out
  out=$("$BIN" ls demo.web --zk "$ZK" --json 2>/dev/null) || return 1
  python3 - "$1" "${2:-}" "$out" <<'PY'
import json, sys
n, running, rows = int(sys.argv[1]), sys.argv[2] == "running", json.loads(sys.argv[3])
if not running:
    sys.exit(0 if len(rows) >= n else 1)
up = [r for r in rows if r["process"] == "running"]
leaders = [r for r in rows if r["state"] == "leader"]
sys.exit(0 if len(rows) == n and len(up) == n and len(leaders) == 1 else 1)
PY
}

# Fails with the agent's log when agent $1 died.
alive_or_fail() { # index
  if ! kill -0 "${pids[$1]}" 2>/dev/null; then
    say "pod$1's agent exited; its log ($WORK/pod$1/agent.log) ends with:"
    tail -n 20 "$WORK/pod$1/agent.log" >&2 || true
    exit 1
  fi
}

say "starting ZooKeeper"
read -r ZK_PORT _ < <(scripts/zk.sh start "$WORK/zk" 0 200)
ZK=127.0.0.1:$ZK_PORT
say "ZooKeeper on $ZK"

build_done=$(date +%s.%N)
for ((i = 0; i < N; i++)); do
  dir=$WORK/pod$i
  mkdir -p "$dir"
  cp examples/web-cluster/pod.toml examples/web-cluster/members.txt.j2 "$dir/"
  "$BIN" run --spec "$dir/pod.toml" --zk "$ZK" \
    --set "ports.\"8080\"=${CONTROL_PORTS[$i]}" --set "ports.\"9000\"=${WEB_PORTS[$i]}" \
    > "$dir/agent.log" 2>&1 &
  pids+=($!)
  # Not a job of this shell: when someone kills it (the demo suggests `kill -9`), the shell
  # prints no "Killed" line.
  disown $!
  # One at a time: pod N registers N-th, so it is #N (seq N) in `ochopod ls`.
  until pods_up $((i + 1)); do alive_or_fail "$i"; sleep 0.05; done
done
say "started $N agents (logs in $WORK/pod*/agent.log)"

# Wait until every pod runs and exactly one leads.
for ((t = 0; ; t++)); do
  if pods_up "$N" running; then break; fi
  for ((i = 0; i < N; i++)); do alive_or_fail "$i"; done
  if [ "$t" -ge 600 ]; then
    say "the cluster did not settle within 60 s:"
    "$BIN" ls --zk "$ZK" >&2 || true
    exit 1
  fi
  sleep 0.1
done
ready=$(date +%s.%N)
"$BIN" ls --zk "$ZK"
for ((i = 0; i < N; i++)); do
  echo "--- pod$i (#$i): http://127.0.0.1:${WEB_PORTS[$i]}/members.txt"
  cat "$WORK/pod$i/www/members.txt"
done
python3 -c "print('cluster running %.2f s after the agents started (%.1f s with the build)' % ($ready - $build_done, $ready - $start_ts))" >&2

if [ -n "${DEMO_EXIT_AFTER_READY:-}" ]; then exit 0; fi
say "live view (kill pod1 in another terminal: kill -9 ${pids[1]:-${pids[0]}}); Ctrl-C to stop"
# In the background, so the shell runs its trap as soon as a signal arrives.
"$BIN" watch --zk "$ZK" &
watcher=$!
wait "$watcher" || true
