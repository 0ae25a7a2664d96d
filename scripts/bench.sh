#!/usr/bin/env bash
# Every benchmark in one run (BENCHMARKS.md):
#   1. criterion micro-benchmarks of the core and the runtime (cargo bench -p ochopod-core -p ochopod)
#   2. the instruction-count guard (scripts/bench-guard.sh)
#   3. the cluster-level harness (ochopod-bench) on a local ZooKeeper with real agents
#
#   scripts/bench.sh                       all three (about 15 minutes on 2 cores)
#   scripts/bench.sh --only reconfig,sim   harness arguments are passed on (ochopod-bench --help)
#   BENCH_SKIP_CRITERION=1 BENCH_SKIP_GUARD=1 scripts/bench.sh --only scale   300 agents, 30 clusters,
#                                          two ZooKeeper restarts (never in a default run)
#   BENCH_SKIP_CRITERION=1 BENCH_SKIP_GUARD=1 scripts/bench.sh   the harness only
#
# The harness's table is printed and its JSON written to $BENCH_JSON (default
# target/bench/results.json). Release builds go to $CARGO_TARGET_DIR (default target/).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
JSON=${BENCH_JSON:-$ROOT/target/bench/results.json}
mkdir -p "$(dirname "$JSON")"
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if [ -z "${BENCH_SKIP_CRITERION:-}" ]; then
  say "criterion: cargo bench -p ochopod-core --bench core; cargo bench -p ochopod --bench template"
  cargo bench -p ochopod-core --bench core
  cargo bench -p ochopod --bench template
fi
if [ -z "${BENCH_SKIP_GUARD:-}" ]; then
  say "instruction-count guard"
  scripts/bench-guard.sh
fi
say "building the agent and the harness (release)"
cargo build --release -p ochopod-cli -p ochopod-bench
command -v wrk >/dev/null || say "wrk is missing: the /info section will fail (apt-get install wrk)"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
say "cluster-level harness: ochopod-bench $*"
"$CARGO_TARGET_DIR/release/ochopod-bench" --bin "$CARGO_TARGET_DIR/release/ochopod" --json "$JSON" "$@"
