#!/usr/bin/env python3
"""A small test pod of our own that behaves like an Ochopod 1.x pod (kazoo + http.server).

    pod1x.py --hosts H --namespace NS --cluster CL --port N --calls FILE [--lead] [--timeout S]
             [--gap MS] [--lock-timeout S]

What it does, the way 1.x (1.0.7) does it:
- registers as 1.x's `ochopod/core/core.py` does: creates `P/pods/<uuid>.` (ephemeral,
  sequential) EMPTY, then, `--gap` milliseconds later (default 0), sets its payload: a 1.x-style
  registration JSON with the keys cluster, namespace, fwk, ip, public, ports {"8080": N},
  port "8080", node, application, task, seq (the node's counter), zk, status, debug; no
  `protocol` key (absent means 1.x);
- competes for kazoo's `Lock(P/coordinator, <uuid>)` in a thread (contenders named
  `<uuid4 hex>__lock__<seq>`, the recipe our Rust pods share) the way 1.x does:
  `lock.acquire(timeout=5)` in a loop, so while it waits its lock node is deleted and created
  again (at the back of the queue) every `--lock-timeout` seconds (default 5);
- serves on 127.0.0.1:N the 1.x control routes `POST /control/<task>/<timeout>` (check, on, off,
  ok, kill): the JSON body is parsed (400 when it is not JSON) and each call is appended to the
  JSON-lines file FILE as {"task", "timeout", "epoch" (the X-Ochopod-Epoch header or null),
  "body"}; the answer is 200 `{}` (410 after a `kill`, like a dead 1.x pod); any other task
  (`signal` aside, which it does not serve) is 400, as 1.x answers a task it does not know;
- `GET|POST /info`: 1.x's twelve keys (application, dependencies, ip, metrics, node, port,
  ports, process, public, state ("leader" while it holds the lock, else "follower"), status,
  task) plus "key", "seq", "cluster", "lock_node" and "lock_nodes" (how many lock nodes it
  created so far);
- `POST /release`: releases the lock and stops competing (the pod stays registered);
- with `--lead`, while it holds the lock it acts as a minimal 1.x leader: whenever `pods/`
  changes it sends check, on, ok to every registered pod at `ip:ports[port]` (no epoch header,
  body {"pods", "dependencies": {}, "key": <the receiver's key>}, like 1.x), then writes
  `snapshot` (ephemeral) and `hash` (MD5 hex, like 1.x).

Prints one JSON line {"key", "seq", "node", "port"} on stdout once registered, then serves until
SIGTERM/SIGINT (closes its session: its nodes vanish at once) or SIGKILL (they vanish when the
session expires). Exit codes: 0 on a signal, 1 on a ZooKeeper error, 2 on usage.
"""
import argparse
import hashlib
import json
import logging
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kazoo.client import KazooClient
from kazoo.exceptions import CancelledError, KazooException, LockTimeout, NodeExistsError, NoNodeError

CONTROL_PORT = "8080"
TASKS = ("check", "on", "off", "ok", "kill")


class Pod:
    def __init__(self, args):
        self.args = args
        self.key = str(uuid.uuid4())
        self.prefix = "/ochopod/clusters/%s.%s" % (args.namespace, args.cluster)
        self.seq = None
        self.node = None
        self.leading = False
        self.released = False
        self.dead = False
        self.calls_lock = threading.Lock()
        self.dirty = threading.Event()
        self.zk = KazooClient(hosts=args.hosts, timeout=args.timeout)
        self.lock = None
        self.lock_nodes = 0

    # -- ZooKeeper -------------------------------------------------------------------------------

    def registration(self):
        return {
            "cluster": self.args.cluster,
            "namespace": self.args.namespace,
            "fwk": "local",
            "ip": "127.0.0.1",
            "public": "",
            "ports": {CONTROL_PORT: self.args.port},
            "port": CONTROL_PORT,
            "node": "pod1x",
            "application": "pod1x",
            "task": "pod1x-%d" % self.args.port,
            "seq": self.seq,
            "zk": self.args.hosts,
            "status": "",
            "debug": "true",
        }

    def register(self):
        self.zk.start(timeout=self.args.timeout * 3)
        self.zk.ensure_path(self.prefix + "/pods")
        # 1.x: `zk.create(path, ephemeral=True, sequence=True)` (an empty node), then
        # `zk.set(path, json.dumps(breadcrumbs))` with `seq` taken from the node's name.
        self.node = self.zk.create(
            "%s/pods/%s." % (self.prefix, self.key), b"", ephemeral=True, sequence=True
        )
        self.seq = int(self.node[-10:])
        if self.args.gap > 0:
            time.sleep(self.args.gap / 1000.0)
        self.zk.set(self.node, json.dumps(self.registration()).encode())

    def contend(self):
        # 1.x: `while 1: if lock.acquire(timeout=5.0): lead` (LockTimeout passes): a timed-out
        # acquire deletes its lock node, the next one creates a new one at the back of the queue.
        self.lock = self.zk.Lock(self.prefix + "/coordinator", self.key)
        while True:
            if self.released:
                return
            self.lock_nodes += 1
            try:
                if self.lock.acquire(timeout=self.args.lock_timeout):
                    break
            except LockTimeout:
                continue
            except CancelledError:
                return
            except KazooException as e:
                logging.warning("lock: %s", e)
                return
        if self.released:
            self.lock.release()
            return
        self.leading = True
        logging.info("pod1x %s leads", self.key)
        if self.args.lead:
            self.zk.ChildrenWatch(self.prefix + "/pods", self.on_pods)
            threading.Thread(target=self.lead, daemon=True).start()

    def release(self):
        self.released = True
        self.leading = False
        if self.lock is not None:
            try:
                self.lock.cancel()
                self.lock.release()
            except KazooException as e:
                logging.warning("release: %s", e)

    # -- minimal 1.x leader ----------------------------------------------------------------------

    def on_pods(self, _children):
        if not self.leading:
            return False  # stop watching
        self.dirty.set()
        return True

    def lead(self):
        while self.leading:
            if not self.dirty.wait(0.5):
                continue
            self.dirty.clear()
            try:
                self.configure()
            except Exception as e:  # noqa: BLE001 - a test pod logs and retries
                logging.warning("round failed: %s", e)
                self.dirty.set()

    def configure(self):
        pods = {}
        for name in self.zk.get_children(self.prefix + "/pods"):
            key, _, suffix = name.rpartition(".")
            try:
                data, _ = self.zk.get("%s/pods/%s" % (self.prefix, name))
                reg = json.loads(data)
            except (NoNodeError, ValueError):
                continue
            if not isinstance(reg, dict) or not suffix.isdigit():
                continue
            if reg.get("seq") is None:
                reg["seq"] = int(suffix)
            pods[key] = reg
        for task in ("check", "on", "ok"):
            for key in sorted(pods):
                reg = pods[key]
                port = reg["ports"].get(str(reg.get("port", CONTROL_PORT)))
                url = "http://%s:%s/control/%s/60" % (reg["ip"], port, task)
                body = json.dumps({"pods": pods, "dependencies": {}, "key": key}).encode()
                req = urllib.request.Request(url, data=body, method="POST")
                req.add_header("Content-Type", "application/json")
                try:
                    with urllib.request.urlopen(req, timeout=75) as resp:
                        code = resp.status
                except urllib.error.HTTPError as e:
                    code = e.code
                if code != 200 and task != "ok":
                    raise RuntimeError("%s %s answered %s" % (task, key, code))
        if not self.leading:
            return
        snapshot = json.dumps(pods).encode()
        digest = hashlib.md5(snapshot).hexdigest().encode()
        try:
            self.zk.create(self.prefix + "/snapshot", snapshot, ephemeral=True)
        except NodeExistsError:
            self.zk.set(self.prefix + "/snapshot", snapshot)
        try:
            self.zk.create(self.prefix + "/hash", digest)
        except NodeExistsError:
            self.zk.set(self.prefix + "/hash", digest)

    # -- HTTP ------------------------------------------------------------------------------------

    def record(self, entry):
        with self.calls_lock:
            with open(self.args.calls, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def info(self):
        reg = self.registration()
        return {
            "application": reg["application"],
            "dependencies": [],
            "ip": reg["ip"],
            "metrics": {},
            "node": reg["node"],
            "port": reg["port"],
            "ports": reg["ports"],
            "process": "dead" if self.dead else "running",
            "public": reg["public"],
            "state": "leader" if self.leading else "follower",
            "status": "",
            "task": reg["task"],
            "key": self.key,
            "seq": self.seq,
            "cluster": "%s.%s" % (self.args.namespace, self.args.cluster),
            "lock_node": getattr(self.lock, "node", None),
            "lock_nodes": self.lock_nodes,
        }


def handler(pod):
    class Handler(BaseHTTPRequestHandler):
        def reply(self, code, obj):
            out = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_GET(self):
            if self.path == "/info":
                self.reply(200, pod.info())
            else:
                self.reply(404, {"error": "no route %s" % self.path})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            parts = [p for p in self.path.split("/") if p]
            if parts == ["info"]:
                return self.reply(200, pod.info())
            if parts == ["release"]:
                pod.release()
                return self.reply(200, pod.info())
            if len(parts) >= 2 and parts[0] == "control" and parts[1] not in TASKS:
                # As 1.x: a task it does not know is a bad request.
                return self.reply(400, {"error": "unknown task %s" % parts[1]})
            if len(parts) < 2 or parts[0] != "control" or parts[1] not in TASKS:
                return self.reply(404, {"error": "no route %s" % self.path})
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError as e:
                return self.reply(400, {"error": "body is not JSON: %s" % e})
            timeout = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
            pod.record(
                {
                    "task": parts[1],
                    "timeout": timeout,
                    "epoch": self.headers.get("X-Ochopod-Epoch"),
                    "body": body,
                }
            )
            if pod.dead:
                return self.reply(410, {})
            if parts[1] == "kill":
                pod.dead = True
            self.reply(200, {})

        def log_message(self, fmt, *args):
            logging.debug(fmt, *args)

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--cluster", required=True)
    p.add_argument("--port", type=int, required=True, help="control port on 127.0.0.1")
    p.add_argument("--calls", required=True, help="JSON-lines file recording control calls")
    p.add_argument("--timeout", type=float, default=3.0, help="session timeout, seconds")
    p.add_argument("--lead", action="store_true", help="configure the cluster while leading")
    p.add_argument("--gap", type=float, default=0.0,
                   help="milliseconds between creating the pod node (empty) and writing its payload")
    p.add_argument("--lock-timeout", type=float, default=5.0,
                   help="seconds of each lock.acquire(timeout=...) while waiting for the lock")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s pod1x %(levelname)s %(message)s")
    logging.getLogger("kazoo").setLevel(logging.WARNING)

    pod = Pod(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(pod))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        pod.register()
    except KazooException as e:
        print("pod1x: ZooKeeper: %s" % e, file=sys.stderr)
        return 1
    print(json.dumps({"key": pod.key, "seq": pod.seq, "node": pod.node, "port": args.port}),
          flush=True)
    threading.Thread(target=pod.contend, daemon=True).start()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    pod.leading = False
    try:
        pod.zk.stop()
        pod.zk.close()
    except KazooException:
        pass
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
