#!/usr/bin/env bash
# Removes what docker/up.sh started: every container labelled ochopod.demo and the network
# ochopod-demo (the images stay; `docker image rm` them by hand when wanted).
set -euo pipefail
ids=$(docker ps -aq --filter label=ochopod.demo=1)
if [ -n "$ids" ]; then
  # shellcheck disable=SC2086 # one id per word
  docker stop -t 15 $ids >/dev/null
  # shellcheck disable=SC2086
  docker rm -v $ids >/dev/null
fi
docker network rm ochopod-demo >/dev/null 2>&1 || true
echo "ochopod demo removed"
