//! The throw-away ZooKeeper server (`scripts/zk.sh`), its four-letter words, and a client.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A ZooKeeper server started with `scripts/zk.sh start`; stopped on drop.
pub(crate) struct ZkServer {
    script: PathBuf,
    dir: PathBuf,
    pub(crate) port: u16,
    tick_ms: u64,
}

impl ZkServer {
    pub(crate) fn start(script: &Path, dir: &Path, tick_ms: u64) -> Result<ZkServer> {
        let out = Command::new("bash")
            .arg(script)
            .arg("start")
            .arg(dir)
            .arg("0")
            .arg(tick_ms.to_string())
            .output()
            .with_context(|| format!("cannot run {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "{} start failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let port = text
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("zk.sh printed {text:?}, expected \"PORT PID\""))?;
        Ok(ZkServer {
            script: script.to_path_buf(),
            dir: dir.to_path_buf(),
            port,
            tick_ms,
        })
    }

    /// Stops the server (SIGTERM, SIGKILL after 10 s); its data stays, so [`ZkServer::restart`]
    /// brings back every node and every session (each with a fresh timeout).
    pub(crate) fn stop(&self) -> Result<()> {
        let status = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .status()
            .with_context(|| format!("cannot run {}", self.script.display()))?;
        if !status.success() {
            bail!("{} stop failed ({status})", self.script.display());
        }
        Ok(())
    }

    /// Starts the stopped server again on the same port with the same data; returns once it
    /// serves requests.
    pub(crate) fn restart(&self) -> Result<()> {
        let out = Command::new("bash")
            .arg(&self.script)
            .arg("start")
            .arg(&self.dir)
            .arg(self.port.to_string())
            .arg(self.tick_ms.to_string())
            .output()
            .with_context(|| format!("cannot run {}", self.script.display()))?;
        if !out.status.success() {
            bail!(
                "{} start on port {} failed (is the port taken?): {}",
                self.script.display(),
                self.port,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `mntr` as a map.
    pub(crate) fn mntr(&self) -> Result<BTreeMap<String, String>> {
        mntr_of(self.port)
    }

    /// The server's process id (from `zk.sh`'s pid file), while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("zk.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// `cons`: one entry per client connection that has a session.
    pub(crate) fn cons(&self) -> Result<Vec<Conn>> {
        Ok(parse_cons(&four_letter(self.port, "cons")?))
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// One client connection as `cons` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Conn {
    /// Session id.
    pub(crate) sid: i64,
    /// Packets received from the client (requests and pings).
    pub(crate) recved: u64,
    /// The last client xid: pings do not advance it, every other request does.
    pub(crate) lcxid: i64,
}

/// `mntr` of the server on `port`, as a map.
pub(crate) fn mntr_of(port: u16) -> Result<BTreeMap<String, String>> {
    let text = four_letter(port, "mntr")?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

fn four_letter(port: u16, cmd: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("cannot reach ZooKeeper on port {port} for `{cmd}`"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(cmd.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn parse_hex_or_dec(v: &str) -> Option<i64> {
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok().map(|u| u as i64),
        None => v.parse().ok(),
    }
}

/// Parses `cons` lines like
/// ` /127.0.0.1:5000[1](queued=0,recved=7,sent=7,sid=0x100..,lop=PING,...,lcxid=0x5,...)`.
pub(crate) fn parse_cons(text: &str) -> Vec<Conn> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(open) = line.find("](") else {
            continue;
        };
        let inner = line[open + 2..].trim_end().trim_end_matches(')');
        let fields: BTreeMap<&str, &str> = inner
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let (Some(sid), Some(recved)) = (
            fields.get("sid").and_then(|v| parse_hex_or_dec(v)),
            fields.get("recved").and_then(|v| v.parse().ok()),
        ) else {
            continue;
        };
        let lcxid = fields
            .get("lcxid")
            .and_then(|v| parse_hex_or_dec(v))
            .unwrap_or(0);
        out.push(Conn { sid, recved, lcxid });
    }
    out
}

/// A ZooKeeper client of the harness itself.
pub(crate) async fn connect(addr: &str) -> Result<zookeeper_client::Client> {
    zookeeper_client::Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .connect(addr)
        .await
        .with_context(|| format!("cannot connect to ZooKeeper at {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cons_lines_give_session_packets_and_xid() {
        let text = " /127.0.0.1:40512[1](queued=0,recved=12,sent=12,sid=0x1000a3f2b6c0001,lop=PING,est=1700000000000,to=5000,lcxid=0x1f,lzxid=0x2a,lresp=1,llat=0,minlat=0,avglat=0.1,maxlat=2)\n /127.0.0.1:40600[0](queued=0,recved=1,sent=0)\n\n";
        let conns = parse_cons(text);
        assert_eq!(
            conns,
            vec![Conn {
                sid: 0x1000a3f2b6c0001,
                recved: 12,
                lcxid: 0x1f
            }]
        );
    }
}
