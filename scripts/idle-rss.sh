#!/usr/bin/env bash
# Idle memory of real agents: N agents (local binding, `sleep` as the process) in one cluster on a
# throw-away ZooKeeper, settled, then IDLE seconds of nothing; prints each agent's RSS and PSS
# (/proc/PID/smaps_rollup) and RssAnon (/proc/PID/status) in KiB, then the medians.
#
#   scripts/idle-rss.sh BINARY [AGENTS] [IDLE_SECS]     defaults: 3 agents, 45 s
#
# BINARY is an `ochopod` agent, e.g. target/release/ochopod (BENCHMARKS.md, "The shipped agent").
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:?usage: scripts/idle-rss.sh BINARY [AGENTS] [IDLE_SECS]}")
n=${2:-3}
idle=${3:-45}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/zk.sh stop "$work/zk" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
read -r zkport _ < <(scripts/zk.sh start "$work/zk")
for i in $(seq 1 "$n"); do
  d="$work/pod$i"
  mkdir -p "$d"
  port=$((21000 + i))
  cat >"$d/pod.toml" <<TOML
[pod]
namespace = "rss"
cluster = "idle"
binding = "local"
port = $port
zk = "127.0.0.1:$zkport"

[process]
command = "exec sleep 100000"
shell = true
TOML
  (cd "$d" && exec "$bin" run --spec pod.toml >"$d/agent.log" 2>&1) &
  pids+=($!)
done
# Settled: every agent's /info says its process runs and the cluster has a clean leader.
deadline=$((SECONDS + 120))
until
  ok=0 leader=0
  for i in $(seq 1 "$n"); do
    info=$(curl -s --max-time 2 "http://127.0.0.1:$((21000 + i))/info" || true)
    case "$info" in *'"process":"running"'*) ok=$((ok + 1)) ;; esac
    case "$info" in *'"state":"leader"'*) leader=$((leader + 1)) ;; esac
  done
  [ "$ok" = "$n" ] && [ "$leader" = 1 ]
do
  if [ $SECONDS -ge $deadline ]; then
    echo "idle-rss: the agents did not settle in 120 s; logs in $work" >&2
    tail -5 "$work"/pod*/agent.log >&2
    trap - EXIT
    exit 1
  fi
  sleep 0.5
done
sleep "$idle"
rss=() anon=() pss=()
for p in "${pids[@]}"; do
  r=$(awk '/^Rss:/ {print $2}' "/proc/$p/smaps_rollup")
  s=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup")
  a=$(awk '/^RssAnon:/ {print $2}' "/proc/$p/status")
  echo "agent $p: rss ${r} KiB, rss_anon ${a} KiB, pss ${s} KiB"
  rss+=("$r") anon+=("$a") pss+=("$s")
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
echo "median of $n: rss $(median "${rss[@]}") KiB, rss_anon $(median "${anon[@]}") KiB, pss $(median "${pss[@]}") KiB; binary $(stat -c %s "$bin") B"
