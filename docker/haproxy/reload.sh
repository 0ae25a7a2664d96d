#!/bin/sh
# The reload hook: validate the new configuration, then ask HAProxy's master process for a
# graceful reload (SIGUSR2: a new worker takes the new backends, the old one finishes its
# connections). An invalid file fails the hook and leaves the running HAProxy untouched.
set -eu
haproxy -c -q -f /etc/haproxy/haproxy.cfg
kill -USR2 "$(cat /run/haproxy.pid)"
