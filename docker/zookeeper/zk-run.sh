#!/bin/sh
# Runs Debian's ZooKeeper in the foreground.
#   zk-run.sh CONFIG          a quorum member (or standalone) with this zoo.cfg
#   zk-run.sh standalone [TICK_MS]   a standalone server on :2181 (data in /var/lib/zookeeper)
set -eu
if [ "${1:-}" = standalone ]; then
  tick=${2:-200}
  mkdir -p /var/lib/zookeeper /run/zookeeper
  cat > /run/zookeeper/zoo.cfg <<CFG
tickTime=$tick
dataDir=/var/lib/zookeeper
clientPort=2181
maxClientCnxns=0
minSessionTimeout=$((tick * 2))
maxSessionTimeout=60000
4lw.commands.whitelist=*
admin.enableServer=false
CFG
  set -- /run/zookeeper/zoo.cfg
fi
cfg=$1
[ -f "$cfg" ] || { echo "zk-run.sh: no config at $cfg" >&2; exit 2; }
conf=$(dirname "$cfg")
if [ ! -f "$conf/log4j.properties" ]; then
  cat > "$conf/log4j.properties" <<'LOG'
log4j.rootLogger=WARN, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d %p %c{1}: %m%n
LOG
fi
cp="$conf:/usr/share/java/zookeeper.jar"
for j in slf4j-api slf4j-log4j12 log4j-1.2 netty-handler netty-transport netty-common netty-buffer \
         netty-resolver netty-codec netty-transport-native-unix-common commons-cli jline metrics-core \
         snappy-java commons-io jackson-databind jackson-core jackson-annotations audience-annotations; do
  [ -f "/usr/share/java/$j.jar" ] && cp="$cp:/usr/share/java/$j.jar"
done
exec java -Xmx${ZK_HEAP:-256m} -XX:+UseSerialGC -Dzookeeper.jmx.log4j.disable=true \
  -Dlog4j.configuration="file:$conf/log4j.properties" -cp "$cp" \
  org.apache.zookeeper.server.quorum.QuorumPeerMain "$cfg"
