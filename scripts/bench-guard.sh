#!/usr/bin/env bash
# Instruction-count guard for the pure core: fails when a core path got much costlier.
#
#   scripts/bench-guard.sh            build the guard bench, count instructions, compare with the
#                                     baseline; exit 1 when a workload exceeds it by > TOLERANCE %
#   scripts/bench-guard.sh --update   rewrite the baseline with the counts measured now
#
# Wall-clock timings are noise on a shared 2-core machine; instruction counts (valgrind's
# callgrind) are repeatable to a fraction of a percent. Each workload of
# crates/ochopod-core/benches/guard.rs runs twice under callgrind: once building its input only,
# once building it and running the measured code REPS times; the difference divided by REPS is
# the figure. Baseline: crates/ochopod-core/benches/guard-baseline.txt ("workload Ir" per line).
# Env: BENCH_GUARD_TOLERANCE (percent, default 25), CARGO_TARGET_DIR as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
BASELINE=crates/ochopod-core/benches/guard-baseline.txt
TOLERANCE=${BENCH_GUARD_TOLERANCE:-25}
MODE=check
case "${1:-}" in
  "") ;;
  --update) MODE=update ;;
  *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || { echo "bench-guard: valgrind is missing (apt-get install valgrind)" >&2; exit 2; }

start=$(date +%s)
echo "bench-guard: building the guard workloads (cargo bench -p ochopod-core --bench guard --no-run)" >&2
EXE=$(cargo bench -q -p ochopod-core --bench guard --no-run --message-format=json \
  | python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "guard" and m.get("executable"):
        print(m["executable"])')
[ -x "$EXE" ] || { echo "bench-guard: no guard executable was built" >&2; exit 2; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
ir() { # workload measure -> total Ir of the run
  valgrind --tool=callgrind --callgrind-out-file="$TMP/$1.$2.out" "$EXE" "$1" "$2" 2>"$TMP/$1.$2.log" >/dev/null \
    || { echo "bench-guard: $1 failed under valgrind:" >&2; cat "$TMP/$1.$2.log" >&2; exit 2; }
  local n
  n=$(awk '/^(summary|totals):/ { print $2; exit }' "$TMP/$1.$2.out")
  [[ $n =~ ^[0-9]+$ ]] || { echo "bench-guard: no instruction count in callgrind's output for $1 $2" >&2; exit 2; }
  echo "$n"
}

# The workload list: a failing or empty list is an error, never "nothing over the limit".
LIST=$("$EXE" --list) || { echo "bench-guard: $EXE --list failed" >&2; exit 2; }
[ -n "$LIST" ] || { echo "bench-guard: $EXE --list named no workload" >&2; exit 2; }
: > "$TMP/now.txt"
while read -r name reps; do
  [[ $reps =~ ^[1-9][0-9]*$ ]] || { echo "bench-guard: workload '$name' has no repetition count ('$reps')" >&2; exit 2; }
  base=$(ir "$name" 0)
  full=$(ir "$name" 1)
  echo "$name $(( (full - base) / reps ))" >> "$TMP/now.txt"
done <<< "$LIST"

if [ "$MODE" = update ]; then
  {
    echo "# Instructions (callgrind Ir) per repetition of each workload of benches/guard.rs."
    echo "# Written by scripts/bench-guard.sh --update; checked with a ${TOLERANCE}% tolerance."
    cat "$TMP/now.txt"
  } > "$BASELINE"
  cat "$TMP/now.txt"
  echo "bench-guard: baseline written to $BASELINE ($(( $(date +%s) - start )) s)" >&2
  exit 0
fi

[ -f "$BASELINE" ] || { echo "bench-guard: no baseline at $BASELINE; run $0 --update and commit it" >&2; exit 2; }
python3 - "$BASELINE" "$TMP/now.txt" "$TOLERANCE" <<'PY'
import sys
def read(path):
    out = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#"):
            name, value = line.split()
            out[name] = int(value)
    return out
base, now, tol = read(sys.argv[1]), read(sys.argv[2]), float(sys.argv[3])
failed = []
if not base:
    failed.append(f"{sys.argv[1]} holds no workload (run scripts/bench-guard.sh --update and commit it)")
# A workload that disappeared is a guard that stopped guarding: it fails too.
for name in base:
    if name not in now:
        failed.append(f"{name}: in the baseline but not measured (the guard bench no longer runs it; "
                      "if it was removed on purpose, run scripts/bench-guard.sh --update and commit it)")
print(f"{'workload':<24} {'baseline Ir':>14} {'now Ir':>14} {'change':>8}")
for name, value in now.items():
    if name not in base:
        print(f"{name:<24} {'-':>14} {value:>14,} {'new':>8}")
        failed.append(f"{name}: not in the baseline (run scripts/bench-guard.sh --update and commit it)")
        continue
    change = (value - base[name]) / base[name] * 100
    flag = ""
    if change > tol:
        flag = "  <-- over the limit"
        failed.append(f"{name}: {change:+.1f}% instructions (limit +{tol:g}%)")
    elif change < -tol:
        flag = "  (much cheaper: update the baseline)"
    print(f"{name:<24} {base[name]:>14,} {value:>14,} {change:>+7.1f}%{flag}")
if failed:
    print("bench-guard: FAILED\n  " + "\n  ".join(failed))
    print("If the extra cost is intended, run scripts/bench-guard.sh --update and commit the baseline.")
    sys.exit(1)
print(f"bench-guard: {len(now)} workloads within +{tol:g}% of the baseline")
PY
echo "bench-guard: done in $(( $(date +%s) - start )) s" >&2
