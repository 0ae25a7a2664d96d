#!/usr/bin/env bash
# `/info` throughput over TLS beside plain HTTP (BENCHMARKS.md, "TLS on the control plane").
#
#   scripts/bench-tls.sh [BIN] [RUNS] [SECS]
#
# One throw-away ZooKeeper (scripts/zk.sh) and two single-pod clusters run by the same agent
# binary (BIN, default target/release/ochopod): one plain HTTP, one TLS with a certificate made
# here by openssl and `tls_open_read_only = true` (wrk presents no client certificate; the
# handshake and the encryption are the same as with one). `wrk -t1 -c10 -dSECS --latency`
# against each /info, RUNS times (default 5, 10 s), plain and TLS alternating so the machine's
# load falls on both alike; prints every run and the medians. wrk keeps its 10 connections open:
# this measures TLS records, not handshakes.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(realpath "${1:-$ROOT/target/release/ochopod}")
RUNS=${2:-5}
SECS=${3:-10}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  "$ROOT/scripts/zk.sh" stop "$WORK/zk" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

read -r ZKPORT _ < <("$ROOT/scripts/zk.sh" start "$WORK/zk")
cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
  -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=pod \
  -keyout pod.key -out pod.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > ext.cnf
openssl x509 -req -in pod.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile ext.cnf -out pod.pem 2>/dev/null

start() { # name port extra-spec-lines
  mkdir -p "$1"
  cat > "$1/pod.toml" <<TOML
[pod]
cluster = "$1"
binding = "local"
zk = "127.0.0.1:$ZKPORT"
port = $2
$3
[process]
command = "sleep 3600"
TOML
  "$BIN" run --spec "$1/pod.toml" > "$1/agent.log" 2>&1 &
  PIDS+=($!)
}
PLAIN=$(free_port)
TLS=$(free_port)
start plain "$PLAIN" ""
start tls "$TLS" "tls_cert = \"$WORK/pod.pem\"
tls_key = \"$WORK/pod.key\"
tls_ca = \"$WORK/ca.pem\"
tls_open_read_only = true"
for _ in $(seq 100); do
  if curl -sf "http://127.0.0.1:$PLAIN/info" | grep -q '"process":"running"' &&
     curl -sf --cacert ca.pem "https://127.0.0.1:$TLS/info" | grep -q '"process":"running"'; then
    break
  fi
  sleep 0.2
done

run() { # url -> "req/s p99_ms"
  wrk -t1 -c10 -d"${SECS}s" --latency "$1" | python3 -c '
import re, sys
t = sys.stdin.read()
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", t)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
print(f"{rate:.0f} {p99:.2f}")'
}
echo "negotiated: $(openssl s_client -connect "127.0.0.1:$TLS" -CAfile ca.pem </dev/null 2>/dev/null | grep -m1 '^New,')"
echo "wrk -t1 -c10 -d${SECS}s --latency, $RUNS runs each, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq "$RUNS"); do
  p=$(run "http://127.0.0.1:$PLAIN/info")
  t=$(run "https://127.0.0.1:$TLS/info")
  echo "run $i: plain $p | tls $t   (req/s p99_ms)"
  echo "$p" >> plain.txt
  echo "$t" >> tls.txt
done
median() { sort -n -k"$2" "$1" | awk -v k="$2" '{a[NR]=$k} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "median plain: $(median plain.txt 1) req/s, p99 $(median plain.txt 2) ms"
echo "median tls:   $(median tls.txt 1) req/s, p99 $(median tls.txt 2) ms"
