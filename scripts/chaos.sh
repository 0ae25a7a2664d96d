#!/usr/bin/env bash
# A seeded chaos run against real agents in Docker containers and a 3-node ZooKeeper ensemble,
# checking the invariants after every fault (tests/py/chaos.py says which, and how).
#
#   scripts/chaos.sh --minutes M --seed S [--settle-timeout SECS] [--json FILE] [--keep]
#
# Builds the images first (scripts/docker-build.sh; OCHOPOD_BIN=path uses that agent binary,
# else `cargo build -p ochopod-cli` and its debug binary; OCHOPOD_CHAOS_NO_BUILD=1 uses the
# images as they are). Prints a report; exits 0 when every invariant held, 1 on a violation (the
# report names the seed: the same command replays the same plan of faults), 2 when the
# environment failed (Docker, the images) or on bad usage.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -gt 0 ] || usage
case " $* " in *" --minutes "*) ;; *) echo "scripts/chaos.sh: --minutes M is required" >&2; usage ;; esac
case " $* " in *" --seed "*) ;; *) echo "scripts/chaos.sh: --seed S is required (any integer; the report names it to replay)" >&2; usage ;; esac

command -v docker >/dev/null || { echo "scripts/chaos.sh: docker is missing; install docker.io and start dockerd" >&2; exit 2; }
python3 -c 'import kazoo' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check kazoo \
  || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages kazoo

if [ "${OCHOPOD_CHAOS_NO_BUILD:-0}" != 1 ]; then
  if [ -z "${OCHOPOD_BIN:-}" ]; then
    cargo build -q -p ochopod-cli
    OCHOPOD_BIN=${CARGO_TARGET_DIR:-$PWD/target}/debug/ochopod
  fi
  OCHOPOD_BIN=$OCHOPOD_BIN OCHOPOD_DOCKER_IMAGES="agent zookeeper" bash scripts/docker-build.sh \
    || { echo "scripts/chaos.sh: building the images failed (above)" >&2; exit 2; }
fi
exec python3 tests/py/chaos.py "$@"
