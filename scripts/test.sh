#!/usr/bin/env bash
# The one command that runs the whole test suite, the same on a workstation and in CI.
#
#   scripts/test.sh              every stage, in order
#   scripts/test.sh STAGE...     only these stages: deps fmt clippy doc build test guard features
#
# Stages:
#   deps      install what is missing: Debian's zookeeper (scripts/zk.sh install), debootstrap
#             (container images), and the Python packages the suites use (kazoo,
#             moto[server], boto3)
#   fmt       cargo fmt --all -- --check
#   clippy    cargo clippy --workspace --all-targets -- -D warnings
#   doc       cargo doc --workspace --no-deps, warnings are errors
#   build     cargo build -p ochopod-cli (the agent binary the end-to-end suites spawn)
#   test      cargo test --workspace (unit, integration and end-to-end suites; tests that need
#             ZooKeeper start their own throw-away servers)
#   guard     instruction-count guard on core paths (callgrind, scripts/bench-guard.sh): fails
#             when a core path costs 25 % more instructions than its committed baseline
#   features  other feature sets (cargo check), see FEATURE_CHECKS below, then the one full
#             build of every platform feature: cargo test -p ochopod-bindings --all-features
#             (Kubernetes against an HTTPS fixture API server, EC2 against moto_server)
#
# Each stage prints its elapsed time; the first failing stage stops the run with its exit code.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

# Extra feature sets, one `cargo check` argument list per line (DESIGN section 10: default,
# no-default and all features for the crates with platform features). Add lines here as the
# crates grow features, e.g.:
#   "-p ochopod-bindings --no-default-features"
#   "-p ochopod-bindings --all-features"
FEATURE_CHECKS=(
  "-p ochopod-bindings --no-default-features"
)

py_deps() {
  if python3 -c 'import kazoo, moto, boto3' 2>/dev/null; then
    return 0
  fi
  local pkgs=(kazoo 'moto[server]' boto3)
  # Debian's own python refuses pip installs without --break-system-packages (PEP 668).
  python3 -m pip install --quiet --disable-pip-version-check "${pkgs[@]}" \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${pkgs[@]}"
  python3 -c 'import kazoo, moto, boto3'
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
stage_clippy() { cargo clippy --workspace --all-targets -- -D warnings; }
stage_doc() { RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps; }
stage_build() { cargo build -p ochopod-cli; }
stage_test() { cargo test --workspace; }
stage_guard() { bash scripts/bench-guard.sh; }
stage_features() {
  local args
  for args in "${FEATURE_CHECKS[@]}"; do
    # shellcheck disable=SC2086 # each entry is an argument list
    cargo check $args
  done
  cargo test -p ochopod-bindings --all-features
}

run_stage() {
  local name=$1 t0 rc=0
  t0=$(date +%s)
  echo "=== stage ${name}"
  "stage_${name}" || rc=$?
  local took=$(( $(date +%s) - t0 ))
  TIMES+=("${name} ${took}s")
  if [ "$rc" -ne 0 ]; then
    echo "=== stage ${name} FAILED (exit ${rc}) after ${took}s"
    summary
    exit "$rc"
  fi
  echo "=== stage ${name} ok in ${took}s"
}

summary() {
  echo "=== stage times: ${TIMES[*]}; total $(( $(date +%s) - START ))s"
}

ALL=(deps fmt clippy doc build test guard features)
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=("${ALL[@]}")
for s in "${STAGES[@]}"; do
  case " ${ALL[*]} " in
    *" $s "*) ;;
    *) echo "scripts/test.sh: unknown stage '$s'; stages are: ${ALL[*]}" >&2; exit 2 ;;
  esac
done

START=$(date +%s)
TIMES=()
for s in "${STAGES[@]}"; do
  run_stage "$s"
done
summary
