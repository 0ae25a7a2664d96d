#!/usr/bin/env bash
# Throw-away ZooKeeper servers for development and tests.
#
#   scripts/zk.sh install                 install Debian's `zookeeper` package when missing
#   scripts/zk.sh start DIR [PORT] [TICK] start a standalone server with its data in DIR; prints
#                                         "PORT PID" once it serves requests (`srvr` answers) (PORT: free one if 0/absent)
#   scripts/zk.sh stop DIR                stop the server started in DIR (by the PID in DIR/zk.pid)
#
# Servers listen on 127.0.0.1 only, with a small tickTime (default 100 ms, so sessions can be as
# short as 200 ms and expiries take seconds), maxClientCnxns=0 and every four-letter word enabled.
set -euo pipefail

JAR=/usr/share/java/zookeeper.jar

install() {
  if [ -f "$JAR" ] && command -v java >/dev/null; then return 0; fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y -qq --no-install-recommends zookeeper >&2
  [ -f "$JAR" ] || { echo "zk.sh: $JAR still missing after installing the zookeeper package" >&2; exit 1; }
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

ruok() { # port
  python3 - "$1" <<'PY'
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
    s.sendall(b"srvr"); data = s.recv(4096); s.close()
    sys.exit(0 if b"Mode:" in data else 1)
except OSError:
    sys.exit(1)
PY
}

start() { # dir [port] [tick]
  local dir=$1 port=${2:-0} tick=${3:-100}
  install
  [ "$port" = 0 ] && port=$(free_port)
  mkdir -p "$dir/data"
  dir=$(cd "$dir" && pwd)
  cat > "$dir/zoo.cfg" <<CFG
tickTime=$tick
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
maxClientCnxns=0
minSessionTimeout=$((tick * 2))
maxSessionTimeout=60000
4lw.commands.whitelist=*
admin.enableServer=false
CFG
  cat > "$dir/log4j.properties" <<'LOG'
log4j.rootLogger=WARN, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File=${zk.log.dir}/zookeeper.log
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d %p %c{1}: %m%n
LOG
  local cp="$dir:$JAR"
  for j in /usr/share/java/slf4j-api.jar /usr/share/java/slf4j-log4j12.jar /usr/share/java/log4j-1.2.jar \
           /usr/share/java/netty-handler.jar /usr/share/java/netty-transport.jar /usr/share/java/netty-common.jar \
           /usr/share/java/netty-buffer.jar /usr/share/java/netty-resolver.jar /usr/share/java/netty-codec.jar \
           /usr/share/java/netty-transport-native-unix-common.jar /usr/share/java/commons-cli.jar \
           /usr/share/java/jline.jar /usr/share/java/metrics-core.jar /usr/share/java/snappy-java.jar \
           /usr/share/java/commons-io.jar /usr/share/java/jackson-databind.jar /usr/share/java/jackson-core.jar \
           /usr/share/java/jackson-annotations.jar /usr/share/java/audience-annotations.jar; do
    [ -f "$j" ] && cp="$cp:$j"
  done
  nohup java -Xmx256m -Dzk.log.dir="$dir" -Dlog4j.configuration="file:$dir/log4j.properties" \
    -Dzookeeper.jmx.log4j.disable=true -cp "$cp" \
    org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg" > "$dir/server.out" 2>&1 &
  local pid=$!
  echo "$pid" > "$dir/zk.pid"
  echo "$port" > "$dir/zk.port"
  for _ in $(seq 1 300); do
    if ruok "$port"; then echo "$port $pid"; return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "zk.sh: ZooKeeper exited at start; see $dir/server.out:" >&2; tail -20 "$dir/server.out" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "zk.sh: ZooKeeper on port $port did not serve requests within 30 s; see $dir/server.out" >&2
  kill "$pid" 2>/dev/null || true
  exit 1
}

stop() { # dir
  local dir=$1 pid
  [ -f "$dir/zk.pid" ] || return 0
  pid=$(cat "$dir/zk.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || { rm -f "$dir/zk.pid"; return 0; }; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/zk.pid"
}

cmd=${1:-}
shift || true
case "$cmd" in
  install) install ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  *) echo "usage: $0 install | start DIR [PORT] [TICK] | stop DIR" >&2; exit 2 ;;
esac
