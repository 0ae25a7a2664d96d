#!/usr/bin/env bash
# The one command that runs the whole test suite, the same on a workstation and in CI.
#
#   scripts/test.sh                      every stage, in order
#   scripts/test.sh STAGE...             only these stages: deps fmt clippy doc build test guard features
#   scripts/test.sh --repeat N [STAGE...]
#                                        the test stage N times (with STAGEs: those, each `test`
#                                        run N times), a line per run, to show the suite is stable
#   scripts/test.sh [...] test -- ARGS   the test stage runs `cargo test --no-fail-fast ARGS`
#                                        instead of the whole workspace, e.g.
#                                        scripts/test.sh --repeat 5 test -- -p ochopod-e2e --test cli
#
# Stages:
#   deps      install what is missing: Debian's zookeeper (scripts/zk.sh install), debootstrap
#             (container images), and the Python packages the suites use (kazoo,
#             moto[server], boto3)
#   fmt       cargo fmt --all -- --check
#   clippy    cargo clippy --workspace --all-targets -- -D warnings, then cargo machete (no
#             unused dependency; installed when missing). crates/ochopod-core and
#             crates/ochopod have their own clippy.toml (no std clock, no std Mutex)
#   doc       cargo doc --workspace --no-deps, warnings are errors
#   build     cargo build -p ochopod-cli (the agent binary the end-to-end suites spawn; its
#             default features: the kubernetes and ec2 bindings)
#   test      cargo test --workspace --no-fail-fast (unit, integration, end-to-end and doc tests;
#             tests that need ZooKeeper start their own throw-away servers)
#   guard     instruction-count guard on core paths (callgrind, scripts/bench-guard.sh): fails
#             when a core path costs 25 % more instructions than its committed baseline
#   features  other feature sets (cargo check), see FEATURE_CHECKS below (the lean agent:
#             local, generic and marathon only; the library without its spec engine), the bindings' tests without features, then
#             the one full build of every platform feature: cargo test -p ochopod-bindings
#             --all-features
#             (Kubernetes against an HTTPS fixture API server, EC2 against moto_server)
#
# Nothing hides a failure: every stage runs even after one failed, every test binary runs even
# after one failed, and the run ends naming every failing stage and test, then exits non-zero
# (with the first failing stage's exit code). Each stage prints its elapsed time.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

# Extra feature sets, one `cargo check` argument list per line (default, no-default and all
# features for the crates with platform features). Add lines here as the crates grow features,
# e.g.:
#   "-p ochopod-bindings --no-default-features"
#   "-p ochopod-bindings --all-features"
FEATURE_CHECKS=(
  "-p ochopod-cli --no-default-features"
  "-p ochopod --no-default-features"
)

py_deps() {
  if python3 -c 'import kazoo, moto, boto3, requests' 2>/dev/null; then
    return 0
  fi
  local pkgs=(kazoo 'moto[server]' boto3 requests)
  # Debian's own python refuses pip installs without --break-system-packages (PEP 668).
  python3 -m pip install --quiet --disable-pip-version-check "${pkgs[@]}" \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${pkgs[@]}"
  python3 -c 'import kazoo, moto, boto3, requests'
}

debian_deps() {
  # debootstrap builds the container images' root filesystem (tests/tests/containers.rs).
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v valgrind >/dev/null || missing+=(valgrind)
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
}

stage_deps() {
  bash scripts/zk.sh install
  debian_deps
  py_deps
  java -version 2>&1 | head -1
  python3 -c 'import kazoo; print("kazoo", kazoo.__version__)'
}
stage_fmt() { cargo fmt --all -- --check; }
# The Cargo graph stays true: no declared dependency goes unused. cargo-machete is installed
# from crates.io when missing (CI is a fresh machine); a dependency it cannot see used (one only
# a feature or a macro needs) is listed in its crate's [package.metadata.cargo-machete].
machete() {
  command -v cargo-machete >/dev/null || cargo install --locked --quiet cargo-machete@0.9.2
  cargo machete
}
stage_clippy() { cargo clippy --workspace --all-targets -- -D warnings && machete; }
stage_doc() { mkdir -p target/doc/ochopod{,_core,_zk,_http,_supervisor,_bindings} && RUSTDOCFLAGS="-D warnings -D rustdoc::broken_intra_doc_links" cargo doc --workspace --no-deps; }
stage_build() { cargo build -p ochopod-cli; }
stage_test() { cargo test --no-fail-fast "${TEST_ARGS[@]}"; }
stage_guard() { bash scripts/bench-guard.sh; }
stage_features() {
  local args
  for args in "${FEATURE_CHECKS[@]}"; do
    # shellcheck disable=SC2086 # each entry is an argument list
    cargo check $args
  done
  # The workspace build gives the bindings the CLI's default features; their lean build (the
  # "feature missing" errors) is tested here. Both run, whatever the first one says.
  local rc=0
  cargo test --no-fail-fast -p ochopod-bindings --no-default-features || rc=$?
  cargo test --no-fail-fast -p ochopod-bindings --all-features || rc=$?
  return "$rc"
}

# What failed in a stage's output: each failing test with its binary, each crate that did not
# compile, and cargo's list of failed targets (a binary that crashed or timed out shows there).
failures_in() {
  awk '
    /^     Running / { bin = $2 }
    /^   Doc-tests / { bin = "doc-tests " $2 }
    /^test .* \.\.\. FAILED$/ {
      name = $0; sub(/^test /, "", name); sub(/ \.\.\. FAILED$/, "", name)
      print "    " bin ": " name
    }
    /^error: could not compile/ { print "    " $0 }
    /^error: [0-9]+ targets? failed:$/ { targets = 1; print "    " $0; next }
    targets && /^    / { print "    " $0; next }
    { targets = 0 }
  ' "$1"
}

# Runs one stage with `set -e` inside (a function called as `f || ...` would run with errexit
# off and hide a failing command in its middle), keeps its output, records time and outcome.
run_stage() {
  local name=$1 label=$2 t0 rc log
  log="${LOGS}/$(printf '%03d' "${#TIMES[@]}")-${name}.log"
  t0=$(date +%s)
  echo "=== stage ${label}"
  set +e
  (
    set -e
    "stage_${name}"
  ) 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  local took=$(( $(date +%s) - t0 ))
  TIMES+=("${label} ${took}s")
  if [ "$rc" -ne 0 ]; then
    echo "=== stage ${label} FAILED (exit ${rc}) after ${took}s"
    FAILED+=("stage ${label}: exit ${rc}")
    while IFS= read -r line; do FAILED+=("$line"); done < <(failures_in "$log")
    [ "$FIRST_RC" -ne 0 ] || FIRST_RC=$rc
    RESULT="red"
  else
    echo "=== stage ${label} ok in ${took}s"
    RESULT="green"
  fi
}

usage() {
  sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

ALL=(deps fmt clippy doc build test guard features)
STAGES=()
REPEAT=""
TEST_ARGS=(--workspace)
CUSTOM_TEST=""
while [ $# -gt 0 ]; do
  case $1 in
    --repeat | --repeat=*)
      if [ "$1" = --repeat ]; then REPEAT=${2:-}; shift; else REPEAT=${1#--repeat=}; fi
      shift
      if ! [[ $REPEAT =~ ^[1-9][0-9]*$ ]]; then
        echo "scripts/test.sh: --repeat needs a count of runs (1 or more), e.g. --repeat 3" >&2
        exit 2
      fi
      ;;
    --) shift; TEST_ARGS=("$@"); CUSTOM_TEST=1; break ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "scripts/test.sh: unknown option '$1'; options are --repeat N and -- ARGS (see --help)" >&2; exit 2 ;;
    *)
      case " ${ALL[*]} " in
        *" $1 "*) STAGES+=("$1") ;;
        *) echo "scripts/test.sh: unknown stage '$1'; stages are: ${ALL[*]}" >&2; exit 2 ;;
      esac
      shift
      ;;
  esac
done
if [ ${#STAGES[@]} -eq 0 ]; then
  if [ -n "$REPEAT" ] || [ -n "$CUSTOM_TEST" ]; then STAGES=(test); else STAGES=("${ALL[@]}"); fi
fi
if [ -n "$CUSTOM_TEST" ] && [[ " ${STAGES[*]} " != *" test "* ]]; then
  echo "scripts/test.sh: the arguments after -- are for the test stage; add it: ${STAGES[*]} test -- ${TEST_ARGS[*]}" >&2
  exit 2
fi
REPEAT=${REPEAT:-1}

START=$(date +%s)
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
TIMES=()
FAILED=()
RUNS=()
FIRST_RC=0
RESULT=""
for s in "${STAGES[@]}"; do
  if [ "$s" = test ] && [ "$REPEAT" -gt 1 ]; then
    for ((i = 1; i <= REPEAT; i++)); do
      run_stage test "test (run ${i}/${REPEAT})"
      RUNS+=("run ${i}/${REPEAT}: ${RESULT} in ${TIMES[-1]##* }")
    done
  else
    run_stage "$s" "$s"
  fi
done

echo "=== stage times: ${TIMES[*]}; total $(( $(date +%s) - START ))s"
if [ ${#RUNS[@]} -gt 0 ]; then
  echo "=== test stage repeated ${REPEAT} times:"
  printf '    %s\n' "${RUNS[@]}"
fi
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "=== FAILED:"
  printf '  %s\n' "${FAILED[@]}"
  exit "$FIRST_RC"
fi
echo "=== all green"
