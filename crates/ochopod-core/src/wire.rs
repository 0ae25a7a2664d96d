//! The wire protocol: every JSON document that crosses a process boundary.
//!
//! The registration stored in ZooKeeper, the body of a control request, the leader epoch header
//! and the `/info` reply live here and only here, so a renamed field is one visible diff. Their
//! version is [`PROTOCOL`]; a registration without `protocol` was written by Ochopod 1.x.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The version of the wire types written by this implementation.
pub const PROTOCOL: u32 = 2;

/// Name of the HTTP header that carries the leader's [`Epoch`] on control requests.
pub const EPOCH_HEADER: &str = "X-Ochopod-Epoch";

/// Pods of one cluster, by key (the pod's UUID).
pub type Pods = BTreeMap<String, Registration>;

/// Dependency views, by dependency name as written in `depends_on`.
pub type Dependencies = BTreeMap<String, Pods>;

/// A pod's registration, as written under `P/pods/<uuid>.<seq>` (`docs/protocol.md#registration`).
///
/// Keys are those of Ochopod 1.x. Fields this implementation does not know are kept in
/// [`Registration::extra`] and written back unchanged, so mixed clusters lose nothing.
/// A registration is never changed once written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// Cluster name, without namespace (e.g. `zookeeper`).
    pub cluster: String,
    /// Namespace (e.g. `prod`).
    pub namespace: String,
    /// Binding that produced this registration (`local`, `generic`, `marathon`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub binding: String,
    /// 1.x's name for `binding`; always written with the same value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fwk: String,
    /// Internal IPv4 address.
    pub ip: String,
    /// External IPv4 address, or empty.
    #[serde(default)]
    pub public: String,
    /// Container port (as a string) -> host port.
    #[serde(default, deserialize_with = "de_ports")]
    pub ports: BTreeMap<String, u16>,
    /// The pod's control port, as a container port (a key of `ports`), written as a string.
    #[serde(default, deserialize_with = "de_string_or_number")]
    pub port: String,
    /// Host or instance id.
    #[serde(default)]
    pub node: String,
    /// Application name given by the platform.
    #[serde(default)]
    pub application: String,
    /// Task id given by the platform.
    #[serde(default)]
    pub task: String,
    /// The ZooKeeper sequence number of the pod's first registration, kept for its whole life.
    #[serde(
        default,
        deserialize_with = "de_opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub seq: Option<u64>,
    /// The ZooKeeper connection string the pod uses (credentials removed).
    #[serde(default)]
    pub zk: String,
    /// Wire version; absent for Ochopod 1.x pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
    /// Every other key (`status`, `debug`, `local`, `start`, `ochopod_*` settings, foreign keys).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Registration {
    /// The host port that reaches `container_port` (identity when the port is not remapped).
    pub fn host_port(&self, container_port: u16) -> u16 {
        self.ports
            .get(&container_port.to_string())
            .copied()
            .unwrap_or(container_port)
    }

    /// The address of this pod's control plane: `ip:<ports[port]>`.
    ///
    /// Returns `None` when `port` is not a valid port number.
    pub fn control_addr(&self) -> Option<String> {
        let port: u16 = self.port.trim().parse().ok()?;
        Some(format!("{}:{}", self.ip, self.host_port(port)))
    }

    /// The full cluster name, `namespace.cluster`.
    pub fn full_cluster(&self) -> String {
        format!("{}.{}", self.namespace, self.cluster)
    }

    /// True when the key name is a secret that must never leave the pod.
    pub fn is_secret_key(name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        ["token", "password", "secret", "zk_auth", "credential"]
            .iter()
            .any(|needle| lower.contains(needle))
    }

    /// Drops every secret from `extra` ([`Registration::is_secret_key`]) and credentials
    /// from `zk`.
    pub fn scrub_secrets(&mut self) {
        self.extra.retain(|k, _| !Self::is_secret_key(k));
        self.zk = crate::ZkAddress::redact(&self.zk);
    }

    /// Parses a registration read from ZooKeeper, naming what is wrong when it cannot.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, crate::Error> {
        let reg: Registration =
            serde_json::from_slice(bytes).map_err(|e| crate::Error::Payload(e.to_string()))?;
        if reg.ip.is_empty() {
            return Err(crate::Error::Payload(
                "registration has an empty `ip`".to_string(),
            ));
        }
        Ok(reg)
    }

    /// Serializes the registration to compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a registration always serializes")
    }
}

fn de_ports<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, u16>, D::Error> {
    let raw: Option<BTreeMap<String, Value>> = Option::deserialize(d)?;
    let mut out = BTreeMap::new();
    for (k, v) in raw.unwrap_or_default() {
        let port = match &v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| de::Error::custom(format!("port {k:?} maps to {v}, not a port number")))?;
        out.insert(k, port);
    }
    Ok(out)
}

fn de_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(de::Error::custom(format!(
            "expected a string or a number, found {other}"
        ))),
    }
}

fn de_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| de::Error::custom(format!("seq {n} is not a positive integer"))),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("seq {s:?} is not a positive integer"))),
        Some(other) => Err(de::Error::custom(format!("seq {other} is not an integer"))),
    }
}

/// The body of `check`, `on` and `ok` control requests sent by the leader.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlBody {
    /// Every pod of the cluster taking part in this round, by key.
    #[serde(default)]
    pub pods: Pods,
    /// Dependency views, by dependency name as written in `depends_on`.
    #[serde(default)]
    pub dependencies: Dependencies,
    /// The receiver's own key.
    #[serde(default)]
    pub key: String,
}

/// The leader's epoch: (czxid of `P/coordinator`, sequence of its lock node).
///
/// It only grows from one leader to the next. Carried by [`EPOCH_HEADER`] as `czxid-seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch {
    /// czxid of the cluster's `coordinator` node.
    pub czxid: i64,
    /// Sequence number of the leader's lock node.
    pub seq: u64,
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.czxid, self.seq)
    }
}

impl FromStr for Epoch {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            crate::Error::Input(format!(
                "bad {EPOCH_HEADER} header {s:?}: expected `<czxid>-<seq>`, two integers"
            ))
        };
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        Ok(Epoch {
            czxid: a.parse().map_err(|_| bad())?,
            seq: b.parse().map_err(|_| bad())?,
        })
    }
}

/// A control task (`/control/<task>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    /// Can the pod be configured now? (`can_configure`)
    Check,
    /// Configure and start the process.
    On,
    /// Tear the process down.
    Off,
    /// The round succeeded (`configured`).
    Ok,
    /// Tear down, finalize, go dead.
    Kill,
    /// Run the user's signal hook.
    Signal,
    /// Run the sanity check now: 200 when it passes, 503 with why when it fails or the process
    /// is not running (what a health-gated round waits on).
    Health,
    /// A dry run of `on` with the view: what the pod would do (restart or reload, and why) and
    /// the files it would render, compared with the files on disk; nothing is written and the
    /// process is left alone (`ochopod plan`).
    Plan,
}

impl Task {
    /// Every task, in the order of the task table of `docs/http.md`.
    pub const ALL: [Task; 8] = [
        Task::Check,
        Task::On,
        Task::Off,
        Task::Ok,
        Task::Kill,
        Task::Signal,
        Task::Health,
        Task::Plan,
    ];

    /// The name used in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Check => "check",
            Task::On => "on",
            Task::Off => "off",
            Task::Ok => "ok",
            Task::Kill => "kill",
            Task::Signal => "signal",
            Task::Health => "health",
            Task::Plan => "plan",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Task {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Task::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                crate::Error::Input(format!(
                    "unknown task {s:?}: use one of check, on, off, ok, kill, signal, health, plan"
                ))
            })
    }
}

/// An operator's pause of a cluster (maintenance mode), the JSON of the cluster's `pause` node.
///
/// While the node exists the leader tracks membership but starts no configuration round.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// Milliseconds since the Unix epoch when the operator paused the cluster.
    #[serde(default)]
    pub since_ms: u64,
    /// Why, as the operator gave it (may be empty).
    #[serde(default)]
    pub reason: String,
}

impl Pause {
    /// Reads a `pause` node's payload. The node's presence is what pauses the cluster, so a
    /// payload that is not a pause still pauses it, with a reason saying what is wrong and how
    /// to fix it.
    pub fn from_slice(data: &[u8]) -> Pause {
        if data.iter().all(u8::is_ascii_whitespace) {
            return Pause::default();
        }
        serde_json::from_slice(data).unwrap_or_else(|e| Pause {
            since_ms: 0,
            reason: format!(
                "unreadable pause node ({e}); `ochopod pause` rewrites it, `ochopod resume` \
                 removes it"
            ),
        })
    }
}

/// A paused cluster as its leader reports it in `/info` (`paused`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseStatus {
    /// Milliseconds since the Unix epoch when the cluster was paused (0 when unknown).
    pub since_ms: u64,
    /// Why, as the operator gave it.
    pub reason: String,
    /// Whether the cluster differs from its committed configuration (resuming runs a round).
    pub pending: bool,
    /// Pods registered since the last configuration this leader knows of, by key.
    #[serde(default)]
    pub joined: Vec<String>,
    /// Pods of that configuration gone since, by key.
    #[serde(default)]
    pub left: Vec<String>,
    /// Whether a dependency's view changed since that configuration.
    #[serde(default)]
    pub dependencies_changed: bool,
    /// False when this leader knows no configuration to compare with (elected while the
    /// cluster differed from its committed hash): `joined`, `left` are then empty.
    #[serde(default)]
    pub known: bool,
}

/// `YYYY-MM-DD HH:MM:SS UTC` for milliseconds since the Unix epoch.
pub fn utc_text(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days to civil date (Howard Hinnant's algorithm), for dates after 1970.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The [`RoundReport::outcome`] of a committed round.
pub const ROUND_OK: &str = "ok";

/// One pod's answer in the leader's last round, as shown in `/info`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    /// Milliseconds since the Unix epoch when the round started (filled in by the runtime).
    #[serde(default)]
    pub started_ms: u64,
    /// How long the round took, in milliseconds.
    pub duration_ms: u64,
    /// `ok` ([`ROUND_OK`]), or why the round failed.
    pub outcome: String,
    /// Each pod's answer (`check 200`, `on 406: ...`), by key.
    pub answers: BTreeMap<String, String>,
    /// Why the round ran: `joined`, `left`, `dependency`, `operator` (a resume), `retry` (an
    /// earlier round failed), `elected` (a new leader found the cluster changed and knows no
    /// earlier configuration to compare with).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub why: Vec<String>,
    /// Pods registered since the last configuration the leader knows of, by key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joined: Vec<String>,
    /// Pods of that configuration gone since, by key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<String>,
    /// The configuration hash the round commits (or would have committed).
    #[serde(default)]
    pub hash: String,
}

/// Entries of a cluster's `history` node at most this long when serialized: far below
/// ZooKeeper's 1 MiB node limit, yet some hundreds of rounds.
pub const HISTORY_MAX_BYTES: usize = 64 * 1024;

/// Lists in one history entry longer than this are cut, with a `+N more` last item.
pub const HISTORY_LIST_MAX: usize = 16;

/// One round in a cluster's `history` node (JSON array, oldest first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Milliseconds since the Unix epoch when the round started.
    pub started_ms: u64,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// `ok`, or why it failed.
    pub outcome: String,
    /// Why it ran (see [`RoundReport::why`]).
    #[serde(default)]
    pub why: Vec<String>,
    /// The pods it configured (or tried to), by key.
    #[serde(default)]
    pub pods: Vec<String>,
    /// Pods joined since the previous configuration.
    #[serde(default)]
    pub joined: Vec<String>,
    /// Pods gone since the previous configuration.
    #[serde(default)]
    pub left: Vec<String>,
    /// Answers that were not 200, by key.
    #[serde(default)]
    pub failed: BTreeMap<String, String>,
    /// The configuration hash.
    #[serde(default)]
    pub hash: String,
    /// The leader that ran it, by key.
    #[serde(default)]
    pub leader: String,
}

fn cut(list: &mut Vec<String>) {
    if list.len() > HISTORY_LIST_MAX {
        let more = list.len() - (HISTORY_LIST_MAX - 1);
        list.truncate(HISTORY_LIST_MAX - 1);
        list.push(format!("+{more} more"));
    }
}

impl HistoryEntry {
    /// The entry for a round `leader` ran; big rounds are summarized (lists cut to
    /// [`HISTORY_LIST_MAX`], answers to failures only and cut likewise).
    pub fn from_report(report: &RoundReport, leader: &str) -> HistoryEntry {
        let mut e = HistoryEntry {
            started_ms: report.started_ms,
            duration_ms: report.duration_ms,
            outcome: report.outcome.chars().take(512).collect(),
            why: report.why.clone(),
            pods: report.answers.keys().cloned().collect(),
            joined: report.joined.clone(),
            left: report.left.clone(),
            failed: report
                .answers
                .iter()
                .filter(|(_, a)| !a.ends_with(" 200"))
                .take(HISTORY_LIST_MAX)
                .map(|(k, a)| (k.clone(), a.chars().take(256).collect()))
                .collect(),
            hash: report.hash.clone(),
            leader: leader.to_string(),
        };
        cut(&mut e.pods);
        cut(&mut e.joined);
        cut(&mut e.left);
        e
    }

    /// Reads a `history` node's payload; anything but a JSON array of entries reads as an
    /// empty history (the next round starts it again) and says why.
    pub fn parse_all(data: &[u8]) -> Result<Vec<HistoryEntry>, String> {
        if data.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        serde_json::from_slice(data)
            .map_err(|e| format!("history node is not a list of rounds: {e}"))
    }

    /// Appends `entry` and drops the oldest entries until the whole serializes within
    /// `max_bytes`; returns the JSON to store.
    pub fn push_bounded(
        all: &mut Vec<HistoryEntry>,
        entry: HistoryEntry,
        max_bytes: usize,
    ) -> Vec<u8> {
        all.push(entry);
        loop {
            let bytes = serde_json::to_vec(all).expect("history serializes");
            if bytes.len() <= max_bytes || all.len() <= 1 {
                return bytes;
            }
            let sizes: Vec<usize> = all
                .iter()
                .map(|e| serde_json::to_vec(e).map_or(0, |b| b.len() + 1))
                .collect();
            let mut over = bytes.len() - max_bytes;
            let mut drop = 0;
            while over > 0 && drop < all.len() - 1 {
                over = over.saturating_sub(sizes[drop]);
                drop += 1;
            }
            all.drain(..drop.max(1));
        }
    }
}

/// The `/info` reply.
///
/// Its top level holds the twelve keys of Ochopod 1.x's `/info`, with 1.x's names and types
/// (`application`, `dependencies`, `ip`, `metrics`, `node`, `port`, `ports`, `process`,
/// `public`, `state`, `status`, `task`), so 1.x tools read it unchanged; the other keys are
/// this implementation's additions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Info {
    /// Application name given by the platform (1.x key).
    #[serde(default)]
    pub application: String,
    /// Dependencies as written in `depends_on` (1.x key).
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Internal IPv4 address (1.x key).
    #[serde(default)]
    pub ip: String,
    /// Metrics returned by the last sanity check: a JSON object, `{}` when none (1.x key).
    #[serde(default)]
    pub metrics: Value,
    /// Host or instance id (1.x key).
    #[serde(default)]
    pub node: String,
    /// The control port as a container port, a string as in 1.x (e.g. `"8080"`).
    #[serde(default)]
    pub port: String,
    /// Container port (as a string) -> host port (1.x key).
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    /// `stopped`, `running`, `terminating` or `dead` (1.x key).
    pub process: String,
    /// External IPv4 address, or empty (1.x key).
    #[serde(default)]
    pub public: String,
    /// `follower`, `leader`, `leader (configuration pending)`, `leader (configuring)`, ...
    /// (1.x key).
    pub state: String,
    /// The cluster probe's result (leader), the pending countdown, or `* <failure>`; empty on
    /// followers (1.x key).
    #[serde(default)]
    pub status: String,
    /// Task id given by the platform (1.x key).
    #[serde(default)]
    pub task: String,
    /// Wire version.
    pub protocol: u32,
    /// The pod's key.
    pub key: String,
    /// The pod's seq, once registered.
    #[serde(default)]
    pub seq: Option<u64>,
    /// `namespace.cluster`.
    pub cluster: String,
    /// The whole registration as stored in ZooKeeper (secrets removed).
    pub registration: Registration,
    /// The process id of the sub-process, when running.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Consecutive failed sanity checks.
    #[serde(default)]
    pub failed_checks: u32,
    /// The last failure (sanity check, configure, crash), if any.
    #[serde(default)]
    pub last_failure: Option<String>,
    /// ZooKeeper session state (`connected`, `disconnected`, `expired`, ...).
    #[serde(default)]
    pub zk: String,
    /// The leader's last configuration round.
    #[serde(default)]
    pub last_round: Option<RoundReport>,
    /// Why the leader's last round failed, while it retries.
    #[serde(default)]
    pub round_failure: Option<String>,
    /// Leader: for how long the cluster has differed from its committed configuration
    /// (milliseconds; absent while clean and on followers).
    #[serde(default)]
    pub pending_ms: Option<u64>,
    /// Leader: pod nodes under `pods/` whose registration it cannot read (yet), by node name,
    /// with why. Each is read again when its data changes, and retried with backoff while it
    /// stays bad; it takes no part in rounds until it reads well. Absent when there is none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unreadable: BTreeMap<String, String>,
    /// Leader: the operator's pause of the cluster, while paused (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<PauseStatus>,
}

/// A JSON error reply: `{"error": ...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong and how to fix it.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PY1X: &str = r#"{"node": "ip-10-0-0-4", "status": "", "application": "marathon-app",
      "task": "web.1234", "ip": "10.0.0.4", "public": "54.1.2.3", "zk": "10.0.0.2:2181",
      "cluster": "web", "namespace": "prod", "fwk": "marathon-ec2", "port": "8080",
      "ports": {"8080": 31002, "9000": 31003}, "debug": "true", "local": "false", "start": "true",
      "seq": 12, "custom": {"a": 1}}"#;

    #[test]
    fn reads_a_1x_registration_and_keeps_unknown_keys() {
        let reg = Registration::from_slice(PY1X.as_bytes()).unwrap();
        assert_eq!(reg.ip, "10.0.0.4");
        assert_eq!(reg.seq, Some(12));
        assert_eq!(reg.protocol, None);
        assert_eq!(reg.host_port(9000), 31003);
        assert_eq!(reg.host_port(7000), 7000);
        assert_eq!(reg.control_addr().as_deref(), Some("10.0.0.4:31002"));
        assert_eq!(reg.extra["custom"]["a"], 1);
        assert_eq!(reg.extra["debug"], "true");
        let back: Value = serde_json::from_str(&reg.to_json()).unwrap();
        let orig: Value = serde_json::from_str(PY1X).unwrap();
        assert_eq!(back, orig, "a 1.x registration round-trips unchanged");
    }

    #[test]
    fn rejects_bad_payloads_with_a_reason() {
        for (bad, why) in [
            ("not json", "expected"),
            (r#"{"cluster":"a","namespace":"b","ip":""}"#, "empty `ip`"),
            (
                r#"{"cluster":"a","namespace":"b","ip":"1.2.3.4","ports":{"80":"x"}}"#,
                "not a port number",
            ),
            (
                r#"{"cluster":"a","namespace":"b","ip":"1.2.3.4","seq":-3}"#,
                "not a positive integer",
            ),
        ] {
            let err = Registration::from_slice(bad.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn secrets_are_scrubbed() {
        let mut reg = Registration {
            zk: "zk://user:pw@h1:2181,h2:2181/x".into(),
            ..Default::default()
        };
        for k in ["token", "db_password", "my_secret", "zk_auth", "color"] {
            reg.extra.insert(k.into(), Value::from("v"));
        }
        reg.scrub_secrets();
        assert_eq!(reg.zk, "zk://h1:2181,h2:2181/x");
        assert_eq!(reg.extra.keys().collect::<Vec<_>>(), vec!["color"]);
    }

    #[test]
    fn epoch_parses_orders_and_rejects() {
        let a: Epoch = "17-3".parse().unwrap();
        let b: Epoch = "17-10".parse().unwrap();
        let c: Epoch = "18-0".parse().unwrap();
        assert!(a < b && b < c);
        assert_eq!(a.to_string(), "17-3");
        assert!("17"
            .parse::<Epoch>()
            .unwrap_err()
            .to_string()
            .contains("<czxid>-<seq>"));
    }

    #[test]
    fn tasks_parse() {
        for t in Task::ALL {
            assert_eq!(t.as_str().parse::<Task>().unwrap(), t);
        }
        assert!("reboot"
            .parse::<Task>()
            .unwrap_err()
            .to_string()
            .contains("unknown task"));
    }
}

/// What an `on` with a given view would do to a pod: the pod machine's half of a `plan` answer
/// (the lifecycle adds the files it would render).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDecision {
    /// What the pod would do.
    pub would: Would,
    /// Why, in a sentence for the operator.
    pub why: String,
    /// Per dependency cluster that changed since the pod's last configuration: who joined and
    /// left (empty before its first configuration).
    pub dependencies: BTreeMap<String, DependencyChange>,
}

/// What a pod would do with a new view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Would {
    /// Start its process (never configured, or the process is down).
    Start,
    /// Configure without starting the process (`start = false`).
    Configure,
    /// Restart its process (strict, or its dependencies changed).
    Restart,
    /// Keep its process running (re-render, and reload if a file changes).
    Reload,
    /// Fail: its configuration would not render.
    Fail,
}

/// How one dependency cluster changed since a pod's last configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyChange {
    /// Keys of the pods that joined.
    pub joined: Vec<String>,
    /// Keys of the pods that left.
    pub left: Vec<String>,
    /// The cluster is new to the view.
    pub added: bool,
    /// The cluster is gone from the view.
    pub removed: bool,
}
