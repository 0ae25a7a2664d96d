#!/usr/bin/env python3
"""Seeded long chaos against real agents in containers and a 3-node ZooKeeper ensemble.

    chaos.py --minutes M --seed S [--settle-timeout SECS] [--json FILE] [--keep]

Run through scripts/chaos.sh (it builds the images first). Everything runs in Docker on one
private network: three ZooKeeper containers (`ochopod/zookeeper` with a static zoo.cfg, no agent)
and three clusters of `ochopod/agent` containers (`web` 4 pods, `db` 3 strict pods, `cache` 3
pods that depend on `db`), every agent given the three members as its `zk`.

Each step injects one to three faults at once (distinct targets, at most one ZooKeeper member),
holds them, heals them, waits for every cluster to settle (bounded, on conditions only) and
checks the invariants. Faults:

    kill          docker kill of an agent container (the leader half the time), started again
                  (a new agent: a new key)
    pause         docker pause (the cgroup freezer: agent and process) for 0.5-10 s
    sigstop       SIGSTOP to the agent alone (its process keeps running), SIGCONT after 0.5-10 s
    partition     docker network disconnect of an agent for 0.5-10 s (past its 5 s session
                  timeout its session expires), then reconnect at the same address
    zk_restart    docker restart of one ZooKeeper member (down 0.5-5 s)
    zk_partition  docker network disconnect of one ZooKeeper member for 1-10 s
    slow          a pod's hooks (can_configure, configured) and its process's stop take 2-10 s
                  (a file its spec reads), then another pod of its cluster restarts, so rounds
                  run with the slow pod

Invariants, checked after every step once the clusters settled (and while faults are held, from
what the agents answer):

    settled       every live pod eventually configured: within --settle-timeout every cluster has
                  every live pod registered, running its process and listed in `snapshot`, and a
                  leader that says `leader` (nothing pending)
    one_writer    exactly one pod per cluster says leader, it holds the lock (lowest contender's
                  session is its pod node's) and owns `snapshot`; at the end, ZooKeeper's own
                  transaction logs (every member's, merged by zxid) are replayed by
                  tests/py/zkfence.py: every write of `snapshot` or `hash` came from the lock
                  holder's session
    snapshot      `snapshot` = the pods that answered `on 200` in the leader's last committed
                  round; at the end, every committed round any agent reported has a commit by
                  that leader listing exactly those pods in the transaction log
    seq           a pod's seq never changes while its agent lives (by key, from /info and from
                  its ZooKeeper node), and /info agrees with ZooKeeper
    zombies       no zombie process in any agent container (one seen twice, a second apart)

Prints a report (faults by kind, checks passed and failed, settle times median and p95, the
machine's load) and exits 1 on any violation; the report names the seed to replay. Exit 2: bad
usage or the environment failed (Docker, images), not the system under test.
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

NS = "chaos"
OWNER = "ochopod.chaos.owner"
ZK_IMAGE = "ochopod/zookeeper:latest"
AGENT_IMAGE = "ochopod/agent:latest"
SESSION_TIMEOUT = 5.0
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Slowness: seconds in /tmp/slow (0 when missing). The hooks sleep that long; the process traps
# SIGTERM and sleeps that long before it exits (a strict pod's `on` restarts it: a slow `on`).
SLOW = "sleep $(cat /tmp/slow 2>/dev/null || echo 0)"
SPEC = """
[pod]
port = 8080
session_timeout = {session}

[model]
damper = 1.0
control_timeout = 40.0
{depends}

[process]
shell = true
command = "trap '{slow}; exit 0' TERM; while :; do sleep 1; done"
grace = 20.0
strict = {strict}

[hooks]
timeout = 60.0
can_configure = "{slow}"
configured = "{slow}"
"""

CLUSTERS = [
    # name, pods, strict, depends_on
    ("web", 4, False, None),
    ("db", 3, True, None),
    ("cache", 3, False, "db"),
]


class EnvError(Exception):
    """The environment failed (Docker, images): not a finding about the agent."""


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def docker(*args, check=True, timeout=180):
    try:
        out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        if check:
            raise EnvError(f"docker {' '.join(args)}: no answer in {timeout} s")
        return ""
    if check and out.returncode != 0:
        raise EnvError(f"docker {' '.join(args)}: exit {out.returncode}: {out.stderr.strip()}")
    return out.stdout.strip()


def four_letter(ip, cmd, timeout=3.0):
    with socket.create_connection((ip, 2181), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(cmd.encode())
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode("utf-8", "replace")


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


class Box:
    """One container on the chaos network."""

    def __init__(self, net, name, ip):
        self.net = net
        self.name = f"{net}-{name}"
        self.short = name
        self.ip = ip
        self.paused = False
        self.stopped = False
        self.disconnected = False

    def pid(self):
        return int(docker("inspect", "-f", "{{.State.Pid}}", self.name))

    def disconnect(self):
        docker("network", "disconnect", self.net, self.name)
        self.disconnected = True

    def reconnect(self):
        docker("network", "connect", "--ip", self.ip, self.net, self.name)
        self.disconnected = False


class Pod(Box):
    def __init__(self, net, cluster, index, ip):
        super().__init__(net, f"{cluster}{index}", ip)
        self.cluster = cluster
        self.sigstopped = False

    def live(self):
        return not (self.paused or self.stopped or self.sigstopped or self.disconnected)

    def info(self, timeout=3.0):
        with urllib.request.urlopen(f"http://{self.ip}:8080/info", timeout=timeout) as r:
            return json.loads(r.read().decode())


class Chaos:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.rng = random.Random(args.seed)
        self.pid = os.getpid()
        self.net = f"ochopod-chaos-{self.pid}"
        self.zks = []
        self.pods = []
        self.kz = None
        self.lock = threading.Lock()
        # Findings.
        self.faults = {}
        self.checks = {}  # invariant -> [passed, failed]
        self.violations = []
        self.settle = {}  # fault kind -> [seconds]
        self.settle_all = []
        self.steps = 0
        self.step = 0
        self.seqs = {}  # key -> (seq, where first seen)
        self.rounds = {}  # (cluster, leader key, started_ms) -> accepted keys
        self.no_round = 0  # settles whose leader had no committed round to compare
        self.overlaps = 0  # samples with two clean leaders in one cluster (a deposed one lagging)
        self.samples = 0
        self.load = [os.getloadavg()]
        self.started = time.time()

    # --- bookkeeping ----------------------------------------------------------------------
    def check(self, name, ok, detail=""):
        with self.lock:
            c = self.checks.setdefault(name, [0, 0])
            if ok:
                c[0] += 1
            else:
                c[1] += 1
                v = f"step {self.step} (seed {self.seed}): {name}: {detail}"
                self.violations.append(v)
                log("VIOLATION " + v)

    def see_seq(self, key, seq, where):
        if seq is None:
            return
        with self.lock:
            first = self.seqs.get(key)
            if first is None:
                self.seqs[key] = (seq, where)
                return
        self.check("seq", first[0] == seq,
                   f"pod {key} had seq {first[0]} ({first[1]}) and now {seq} ({where})")

    # --- set-up ---------------------------------------------------------------------------
    def sweep(self):
        """Removes what chaos runs whose process is gone left behind."""
        out = docker("ps", "-a", "--filter", f"label={OWNER}", "--format",
                     '{{.ID}} {{.Label "' + OWNER + '"}}', check=False)
        for line in out.splitlines():
            cid, _, pid = line.partition(" ")
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                docker("rm", "-f", "-v", cid, check=False)
        out = docker("network", "ls", "--filter", f"label={OWNER}", "--format",
                     '{{.ID}} {{.Label "' + OWNER + '"}}', check=False)
        for line in out.splitlines():
            nid, _, pid = line.partition(" ")
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                docker("network", "rm", nid, check=False)

    def make_network(self):
        start = (self.pid * 7) % 200
        last = ""
        for k in range(200):
            third = 20 + (start + k) % 200
            prefix = f"10.214.{third}"
            out = subprocess.run(
                ["docker", "network", "create", "--driver", "bridge", "--subnet", f"{prefix}.0/24",
                 "--gateway", f"{prefix}.1", "--label", f"{OWNER}={self.pid}", self.net],
                capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if out.returncode == 0:
                return prefix
            last = out.stderr.strip()
        raise EnvError(f"no free 10.214.x.0/24 subnet for the chaos network: {last}")

    def create(self, box, image, opts, args, files):
        docker("create", "--name", box.name, "--hostname", box.short, "--network", self.net,
               "--ip", box.ip, "--label", f"{OWNER}={self.pid}", "-e", "RUST_LOG=info",
               *opts, image, *args)
        with tempfile.TemporaryDirectory() as d:
            for i, (path, text) in enumerate(files):
                local = os.path.join(d, str(i))
                with open(local, "w") as f:
                    f.write(text)
                docker("cp", local, f"{box.name}:{path}")
        docker("start", box.name)

    def setup(self):
        for image in (ZK_IMAGE, AGENT_IMAGE):
            if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
                raise EnvError(f"no image {image}: run scripts/chaos.sh (it builds them) or "
                               "scripts/docker-build.sh")
        self.sweep()
        prefix = self.make_network()
        servers = "".join(f"server.{i}={prefix}.{10 + i}:2888:3888\n" for i in (1, 2, 3))
        cfg = ("tickTime=500\ninitLimit=20\nsyncLimit=10\ndataDir=/var/lib/zookeeper\n"
               "clientPort=2181\nmaxClientCnxns=0\n4lw.commands.whitelist=*\n"
               "admin.enableServer=false\nquorumListenOnAllIPs=true\npreAllocSize=1024\n" + servers)
        for i in (1, 2, 3):
            zk = Box(self.net, f"zk{i}", f"{prefix}.{10 + i}")
            self.create(zk, ZK_IMAGE, ["--entrypoint", "/usr/local/bin/zk-run.sh",
                                       "-e", "ZK_HEAP=128m"],
                        ["/etc/zookeeper/ensemble/zoo.cfg"],
                        [("/etc/zookeeper/ensemble/zoo.cfg", cfg),
                         ("/var/lib/zookeeper/myid", f"{i}\n")])
            self.zks.append(zk)
        self.wait_ensemble(300)
        hosts = ",".join(f"{z.ip}:2181" for z in self.zks)
        self.kz = KazooClient(hosts=hosts, timeout=10.0)
        self.kz.start(timeout=120)
        host = 20
        for name, n, strict, depends in CLUSTERS:
            spec = SPEC.format(session=SESSION_TIMEOUT, slow=SLOW,
                               strict="true" if strict else "false",
                               depends=f'depends_on = ["{depends}"]' if depends else "")
            for i in range(1, n + 1):
                pod = Pod(self.net, name, i, f"{prefix}.{host}")
                host += 1
                self.create(pod, AGENT_IMAGE,
                            ["-e", f"ochopod_zk={hosts}", "-e", f"ochopod_namespace={NS}",
                             "-e", f"ochopod_cluster={name}", "--stop-timeout", "30"],
                            [], [("/etc/ochopod/pod.toml", spec)])
                self.pods.append(pod)
        log(f"network {self.net} ({prefix}.0/24): ensemble {hosts}, "
            f"{len(self.pods)} agents in {len(CLUSTERS)} clusters")

    def wait_ensemble(self, timeout):
        deadline = time.time() + timeout
        last = ""
        while time.time() < deadline:
            roles = []
            for z in self.zks:
                try:
                    mntr = four_letter(z.ip, "mntr")
                    role = [l.split("\t")[1] for l in mntr.splitlines()
                            if l.startswith("zk_server_state\t")]
                    roles.append(role[0] if role else "?")
                except OSError as e:
                    roles.append(f"down ({e})")
            if sorted(roles) == ["follower", "follower", "leader"]:
                return
            last = str(roles)
            time.sleep(1)
        raise EnvError(f"the ZooKeeper ensemble did not form in {timeout} s: {last}; "
                       f"zk1 log: {docker('logs', '--tail', '30', self.zks[0].name, check=False)}")

    def teardown(self):
        if self.kz:
            try:
                self.kz.stop()
                self.kz.close()
            except Exception:
                pass
        for b in self.zks + self.pods:
            if b.paused:
                docker("unpause", b.name, check=False)
        ids = docker("ps", "-aq", "--filter", f"label={OWNER}={self.pid}", check=False).split()
        if ids:
            docker("rm", "-f", "-v", *ids, check=False, timeout=300)
        docker("network", "rm", self.net, check=False)

    # --- reading the system ---------------------------------------------------------------
    def zk_cluster(self, cluster):
        """What ZooKeeper holds for one cluster (raises on connection trouble)."""
        base = f"/ochopod/clusters/{NS}.{cluster}"
        pods = {}
        try:
            children = self.kz.get_children(f"{base}/pods")
        except NoNodeError:
            children = []
        for c in children:
            key, _, counter = c.rpartition(".")
            if not (len(counter) == 10 and counter.isdigit()):
                continue
            try:
                data, stat = self.kz.get(f"{base}/pods/{c}")
            except NoNodeError:
                continue
            try:
                payload = json.loads(data.decode())
            except ValueError:
                continue
            seq = payload.get("seq") if isinstance(payload, dict) else None
            pods[key] = (int(counter) if seq is None else seq, stat.ephemeralOwner, stat.czxid)
        contenders = []
        try:
            for c in self.kz.get_children(f"{base}/coordinator"):
                try:
                    _, stat = self.kz.get(f"{base}/coordinator/{c}")
                except NoNodeError:
                    continue
                digits = len(c) - len(c.rstrip("0123456789"))
                contenders.append((int(c[-digits:]) if digits else 1 << 62, stat.ephemeralOwner))
        except NoNodeError:
            pass
        contenders.sort()
        snapshot, snap_owner = None, None
        try:
            data, stat = self.kz.get(f"{base}/snapshot")
            snapshot = set(json.loads(data.decode()).keys())
            snap_owner = stat.ephemeralOwner
        except NoNodeError:
            pass
        try:
            hash_ = self.kz.get(f"{base}/hash")[0].decode()
        except NoNodeError:
            hash_ = None
        return {
            "pods": pods,
            "holder": contenders[0][1] if contenders else None,
            "snapshot": snapshot,
            "snap_owner": snap_owner,
            "hash": hash_,
        }

    def infos(self, pods, timeout=3.0):
        def one(p):
            try:
                return p, p.info(timeout)
            except Exception as e:  # noqa: BLE001 (any failure: the pod did not answer)
                return p, e
        with ThreadPoolExecutor(max_workers=max(1, len(pods))) as ex:
            return dict(ex.map(one, pods))

    def note_rounds(self, infos):
        for p, info in infos.items():
            if isinstance(info, Exception):
                continue
            self.see_seq(info.get("key"), info.get("seq"), f"/info of {p.short}")
            r = info.get("last_round")
            if info.get("state", "").startswith("leader") and r and r.get("outcome") == "ok":
                acc = {k for k, a in r.get("answers", {}).items() if a.startswith("on 200")}
                with self.lock:
                    self.rounds[(p.cluster, info["key"], r.get("started_ms"))] = acc

    def sample(self):
        """While faults are held: what the agents that can answer say."""
        live = [p for p in self.pods if p.live()]
        infos = self.infos(live, timeout=2.0)
        self.note_rounds(infos)
        self.samples += 1
        for name, _, _, _ in CLUSTERS:
            clean = [p for p, i in infos.items()
                     if p.cluster == name and not isinstance(i, Exception) and i.get("state") == "leader"]
            if len(clean) > 1:
                self.overlaps += 1

    def hold(self, seconds):
        end = time.time() + seconds
        while True:
            self.sample()
            left = end - time.time()
            if left <= 0:
                return
            time.sleep(min(left, 1.0))

    def settled(self, cluster):
        """None when `cluster` is at rest, else why not; with what was read."""
        pods = [p for p in self.pods if p.cluster == cluster]
        infos = self.infos(pods)
        self.note_rounds(infos)
        bad = [f"{p.short}: {i}" for p, i in infos.items() if isinstance(i, Exception)]
        if bad:
            return "no answer from " + "; ".join(bad), None
        by_pod = {p.short: (i["state"], i.get("process"), i.get("seq")) for p, i in infos.items()}
        if not all(i.get("process") == "running" and i.get("seq") is not None
                   for i in infos.values()):
            return f"not every process runs: {by_pod}", None
        leaders = [(p, i) for p, i in infos.items() if i["state"].startswith("leader")]
        if len(leaders) != 1 or leaders[0][1]["state"] != "leader":
            return f"leaders: {by_pod}", None
        if any(i["state"] != "follower" for p, i in infos.items() if p is not leaders[0][0]):
            return f"states: {by_pod}", None
        try:
            zk = self.zk_cluster(cluster)
        except Exception as e:  # noqa: BLE001 (connection loss while a member is down)
            return f"reading ZooKeeper: {e!r}", None
        keys = {i["key"] for i in infos.values()}
        lkey = leaders[0][1]["key"]
        owner = zk["pods"].get(lkey, (None, None))[1]
        if set(zk["pods"]) != keys or zk["snapshot"] != keys or zk["hash"] is None \
                or owner is None or zk["holder"] != owner or zk["snap_owner"] != owner:
            return (f"zk pods {sorted(zk['pods'])} snapshot {sorted(zk['snapshot'] or [])} "
                    f"hash {zk['hash']} holder {zk['holder']} leader session {owner} "
                    f"snapshot owner {zk['snap_owner']}; agents {sorted(keys)}"), None
        return None, (infos, zk, leaders[0])

    def zombies(self, pod):
        script = ("z() { grep -ls '^State:[[:space:]]*Z' /proc/[0-9]*/status | cut -d/ -f3; }; "
                  "a=$(z); sleep 1; b=$(z); for p in $a; do "
                  "echo \"$b\" | grep -qx \"$p\" && echo $p; done; true")
        out = docker("exec", pod.name, "sh", "-c", script, check=False, timeout=60)
        return out.split()

    def settle_and_check(self, kinds):
        """Waits for every cluster to settle (bounded), then checks the invariants."""
        t0 = time.time()
        deadline = t0 + self.args.settle_timeout
        pending = {name for name, _, _, _ in CLUSTERS}
        states = {}
        why = {}
        while pending and time.time() < deadline:
            for name in sorted(pending):
                w, state = self.settled(name)
                if w is None:
                    states[name] = state
                    pending.discard(name)
                else:
                    why[name] = w
            if pending:
                time.sleep(0.5)
        took = time.time() - t0
        self.check("settled", not pending,
                   "; ".join(f"{c} not settled after {self.args.settle_timeout:.0f} s: {why.get(c)}"
                             for c in sorted(pending)))
        if pending:
            # Dump what each unsettled pod says, for the report.
            for p in self.pods:
                if p.cluster in pending:
                    out = subprocess.run(["docker", "logs", "--tail", "25", p.name],
                                         capture_output=True, text=True)
                    tail = out.stdout + out.stderr
                    log(f"--- {p.short} log tail:\n{tail}")
            return
        if kinds == ["start"]:
            self.cold_start = took
        else:
            self.settle_all.append(took)
            for k in set(kinds):
                self.settle.setdefault(k, []).append(took)
        for name, (infos, zk, (lpod, linfo)) in states.items():
            # One writer: one leader, holding the lock, owning the snapshot (settled says so).
            self.check("one_writer", True)
            # Snapshot = the pods that accepted `on` in the leader's last committed round.
            # Only a round that wrote the committed hash wrote this snapshot: a leader elected
            # with a matching hash restores the snapshot without a round, and its last round
            # (from an earlier term) is older.
            r = linfo.get("last_round")
            if r and r.get("outcome") == "ok" and r.get("hash") == zk["hash"]:
                acc = {k for k, a in r.get("answers", {}).items() if a.startswith("on 200")}
                self.check("snapshot", acc == zk["snapshot"],
                           f"{name}: leader {lpod.short} round {r.get('started_ms')} accepted "
                           f"{sorted(acc)}, snapshot {sorted(zk['snapshot'])}")
            else:
                # The leader restored the committed snapshot without a round of its own.
                self.no_round += 1
            # Seq: /info agrees with ZooKeeper, and never changes for a key.
            for p, i in infos.items():
                zseq = zk["pods"][i["key"]][0]
                self.check("seq", zseq == i["seq"],
                           f"{p.short} ({i['key']}): /info seq {i['seq']}, ZooKeeper {zseq}")
                self.see_seq(i["key"], zseq, f"ZooKeeper node of {p.short}")
        with ThreadPoolExecutor(max_workers=len(self.pods)) as ex:
            for p, z in zip(self.pods, ex.map(self.zombies, self.pods)):
                self.check("zombies", not z, f"{p.short}: zombie pids {z} seen twice, 1 s apart")
        return took

    # --- faults ---------------------------------------------------------------------------
    def leader_of(self, cluster):
        pods = [p for p in self.pods if p.cluster == cluster and p.live()]
        for p, i in self.infos(pods).items():
            if not isinstance(i, Exception) and i.get("state", "").startswith("leader"):
                return p
        return None

    def plan(self):
        """One step: 1 to 3 faults on distinct targets, at most one ZooKeeper member."""
        kinds = ["kill", "pause", "sigstop", "partition", "zk_restart", "zk_partition", "slow"]
        weights = [20, 15, 10, 20, 10, 10, 15]
        n = self.rng.choice([1, 2, 2, 3, 3])
        faults, used, zk_used = [], set(), False
        for _ in range(n):
            kind = self.rng.choices(kinds, weights)[0]
            if kind.startswith("zk"):
                if zk_used:
                    continue
                zk_used = True
                target = self.rng.choice(self.zks)
            else:
                cluster = self.rng.choice(CLUSTERS)[0]
                members = [p for p in self.pods if p.cluster == cluster and p.name not in used]
                if len(members) < (2 if kind == "slow" else 1):
                    continue
                # The leader half the time for these (who leads is known only at injection).
                target = self.rng.choice(members)
                if kind in ("kill", "pause", "partition") and self.rng.random() < 0.5:
                    target = ("leader", cluster)
                elif kind == "slow":
                    other = self.rng.choice([m for m in members if m is not target])
                    target = (target, other)
            secs = {"kill": (0.2, 4), "pause": (0.5, 10), "sigstop": (0.5, 10),
                    "partition": (0.5, 10), "zk_restart": (0.5, 5), "zk_partition": (1, 10),
                    "slow": (2, 10)}[kind]
            d = round(self.rng.uniform(*secs), 1)
            faults.append([kind, target, d])
            if isinstance(target, Pod):
                used.add(target.name)
            elif isinstance(target, tuple) and isinstance(target[0], Pod):
                used.update(t.name for t in target)
        return faults

    def resolve(self, faults):
        """Turns ("leader", cluster) into the pod that leads it now (or, when that pod is
        already a target or none leads, the pod the plan drew)."""
        used = {t.name for _, t, _ in faults if isinstance(t, Pod)}
        for f in faults:
            if isinstance(f[1], tuple) and f[1][0] == "leader":
                cluster = f[1][1]
                leader = self.leader_of(cluster)
                if leader is None or leader.name in used:
                    spare = [p for p in self.pods if p.cluster == cluster and p.name not in used]
                    leader = spare[0]
                f[1] = leader
                used.add(leader.name)
        return faults

    def inject(self, kind, t, d):
        if kind == "kill":
            docker("kill", t.name)
            t.stopped = True
        elif kind == "pause":
            docker("pause", t.name)
            t.paused = True
        elif kind == "sigstop":
            os.kill(t.pid(), signal.SIGSTOP)
            t.sigstopped = True
        elif kind == "partition":
            t.disconnect()
        elif kind == "zk_restart":
            docker("kill", t.name)
            t.stopped = True
        elif kind == "zk_partition":
            t.disconnect()
        elif kind == "slow":
            slow, other = t
            docker("exec", slow.name, "sh", "-c", f"echo {int(d)} > /tmp/slow")
            # A membership change: the other pod leaves cleanly and comes back (a new key).
            docker("restart", "-t", "30", other.name, timeout=300)

    def heal(self, kind, t, d):
        if kind in ("kill", "zk_restart"):
            docker("start", t.name)
            t.stopped = False
        elif kind == "pause":
            docker("unpause", t.name)
            t.paused = False
        elif kind == "sigstop":
            os.kill(t.pid(), signal.SIGCONT)
            t.sigstopped = False
        elif kind in ("partition", "zk_partition"):
            t.reconnect()

    def after(self, kind, t):
        if kind == "slow":
            docker("exec", t[0].name, "sh", "-c", "rm -f /tmp/slow", check=False)

    def describe(self, kind, t, d):
        who = "+".join(x.short for x in t) if isinstance(t, tuple) else t.short
        return f"{kind} {who} {d}s"

    # --- the run --------------------------------------------------------------------------
    def run(self):
        self.setup()
        log("waiting for the clusters to settle the first time")
        if self.settle_and_check(["start"]) is None:
            return
        deadline = self.started + self.args.minutes * 60
        while time.time() < deadline:
            self.step += 1
            faults = self.resolve(self.plan())
            for kind, t, d in faults:
                self.inject(kind, t, d)
                with self.lock:
                    self.faults[kind] = self.faults.get(kind, 0) + 1
            log(f"step {self.step}: " + ", ".join(self.describe(*f) for f in faults))
            self.hold(max(d for _, _, d in faults))
            for kind, t, d in faults:
                self.heal(kind, t, d)
            took = self.settle_and_check([k for k, _, _ in faults])
            for kind, t, _ in faults:
                self.after(kind, t)
            self.load.append(os.getloadavg())
            if took is None:
                log("a cluster did not settle: stopping the run here")
                break
            log(f"step {self.step}: settled in {took:.1f} s")
        self.final_fence()

    def final_fence(self):
        """Replays every member's transaction log (merged by zxid) with tests/py/zkfence.py."""
        work = tempfile.mkdtemp(prefix="ochopod-chaos-logs-")
        try:
            # Stopped first, so every log is whole and flushed when it is copied.
            for z in self.zks:
                docker("stop", "-t", "20", z.name, timeout=300)
            datas = []
            for z in self.zks:
                dest = os.path.join(work, z.short)
                os.makedirs(dest)
                docker("cp", f"{z.name}:/var/lib/zookeeper/version-2", dest)
                datas.append(f"/logs/{z.short}")
            paths = {f"/ochopod/clusters/{NS}.{name}": name for name, _, _, _ in CLUSTERS}
            argv = ["run", "--rm", "--network", "none", "-v", f"{work}:/logs:ro",
                    "-v", f"{REPO}/tests/py:/py:ro", "--entrypoint", "python3", ZK_IMAGE,
                    "/py/zkfence.py"]
            for d in datas:
                argv += ["--data", d]
            for path in paths:
                argv += ["--cluster", path]
            out = subprocess.run(["docker", *argv], capture_output=True, text=True,
                                 stdin=subprocess.DEVNULL, timeout=1800)
            if out.returncode == 3:
                # Every member was brought back in line by a snapshot at least once: no log
                # holds the whole history, so there is nothing sound to replay.
                self.fence_skipped = out.stderr.strip()[-600:]
                return
            if out.returncode != 0:
                self.check("one_writer_log", False,
                           f"zkfence.py failed (exit {out.returncode}): {out.stderr.strip()[-1500:]}")
                return
            every = json.loads(out.stdout)
            if len(paths) == 1:
                every = {next(iter(paths)): every}
            self.fence_stats = {}
            for path, fence in every.items():
                name = paths[path]
                self.fence_stats[name] = (fence["txns"], fence["writes"], len(fence["commits"]),
                                          fence["contenders_seen"], fence.get("history"))
                for v in fence["violations"]:
                    self.check("one_writer_log", False, f"{name}: {v}")
                if not fence["violations"]:
                    self.check("one_writer_log", True)
                commits = [(c.get("key"), set(c.get("snapshot") or [])) for c in fence["commits"]]
                for (cl, leader, started), acc in sorted(self.rounds.items(), key=str):
                    if cl != name:
                        continue
                    theirs = [sorted(snap) for who, snap in commits if who == leader]
                    self.check("snapshot_log", (leader, acc) in commits,
                               f"{name}: leader {leader} reported a committed round (started "
                               f"{started}) accepted by {sorted(acc)}, but no commit of that "
                               "leader in the transaction log lists exactly those pods (its "
                               f"commits: {theirs})")
        finally:
            if self.violations and self.args.keep:
                log(f"transaction logs kept in {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)

    def report(self, error=None):
        took = time.time() - self.started
        lines = ["", "=== chaos report ===",
                 f"seed {self.seed}, {self.args.minutes} min asked, ran {took / 60:.1f} min, "
                 f"{self.step} steps",
                 f"replay: scripts/chaos.sh --minutes {self.args.minutes} --seed {self.seed}",
                 f"load average (1 min) over the run: min {min(l[0] for l in self.load):.1f}, "
                 f"median {statistics.median(l[0] for l in self.load):.1f}, "
                 f"max {max(l[0] for l in self.load):.1f} on {os.cpu_count()} cpus",
                 f"faults: {sum(self.faults.values())} "
                 + "(" + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) + ")"]
        lines.append("checks (passed/failed): " + ", ".join(
            f"{k} {v[0]}/{v[1]}" for k, v in sorted(self.checks.items())))
        if getattr(self, "cold_start", None) is not None:
            lines.append(f"cold start: every cluster settled {self.cold_start:.1f} s after the "
                         "agents were started")
        if self.settle_all:
            lines.append(f"settle time after healing (s): median {statistics.median(self.settle_all):.1f}, "
                         f"p95 {pct(self.settle_all, 95):.1f}, max {max(self.settle_all):.1f} "
                         f"over {len(self.settle_all)} settles")
            for k, v in sorted(self.settle.items()):
                lines.append(f"  steps with {k}: median {statistics.median(v):.1f}, "
                             f"p95 {pct(v, 95):.1f} ({len(v)})")
        lines.append(f"settled clusters whose leader restored the committed snapshot without a "
                     f"round of its own (snapshot check not applicable): {self.no_round}")
        lines.append(f"agent samples while faults held: {self.samples}; committed rounds seen: "
                     f"{len(self.rounds)}; samples with two clean leaders in a cluster (a deposed "
                     f"leader not yet aware): {self.overlaps}")
        for name, (txns, writes, commits, contenders, src) in sorted(getattr(self, "fence_stats", {}).items()):
            lines.append(f"transaction log ({src}), {name}: {txns} txns, {writes} snapshot/hash "
                         f"writes, {commits} commits, {contenders} lock contenders")
        if getattr(self, "fence_skipped", None):
            lines.append(f"transaction logs not replayed: {self.fence_skipped}")
        if error:
            lines.append(f"ERROR (environment, not a finding): {error}")
        if self.violations:
            lines.append(f"VIOLATIONS ({len(self.violations)}), seed {self.seed}:")
            lines += ["  " + v for v in self.violations[:50]]
        else:
            lines.append("no violation")
        print("\n".join(lines), flush=True)
        if self.args.json:
            with open(self.args.json, "w") as f:
                json.dump({"seed": self.seed, "minutes": took / 60, "steps": self.step,
                           "faults": self.faults, "checks": self.checks,
                           "violations": self.violations, "settle": self.settle_all,
                           "load": self.load, "rounds": len(self.rounds),
                           "error": error}, f, indent=1)


def main():
    import logging
    logging.basicConfig(level=logging.ERROR)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, required=True, help="how long to inject faults")
    p.add_argument("--seed", type=int, required=True, help="the seed (same seed, same plan)")
    p.add_argument("--settle-timeout", type=float, default=300.0,
                   help="seconds every cluster gets to settle after a step (default 300)")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--keep", action="store_true", help="keep the transaction logs on a violation")
    args = p.parse_args()
    if args.minutes <= 0 or args.settle_timeout <= 0:
        p.error("--minutes and --settle-timeout must be positive")
    chaos = Chaos(args)
    error = None
    try:
        chaos.run()
    except EnvError as e:
        error = str(e)
    except KeyboardInterrupt:
        error = "interrupted"
    except Exception:  # noqa: BLE001 (a bug of this driver: say so, clean up, exit 2)
        import traceback
        error = "the driver failed: " + traceback.format_exc()
    finally:
        try:
            chaos.report(error)
        finally:
            chaos.teardown()
    if chaos.violations:
        return 1
    return 2 if error else 0


if __name__ == "__main__":
    sys.exit(main())
