#!/usr/bin/env python3
"""Replays ZooKeeper's transaction log and checks the leader fence of a cluster.

    zkfence.py --data DIR [--data DIR...] --cluster /ochopod/clusters/NS.CL

DIR is the server's data folder (holding `version-2/log.*`). For an ensemble pass every member's
folder: the longest history without holes is replayed (a member brought up to date by a
snapshot lacks what it skipped; see complete_history). Exit 3 when no member has one. The log is printed with ZooKeeper's
own `TxnLogToolkit`, so every transaction is seen, in zxid order, with the session that made it:
nothing a watcher could miss between two events.

Checked ("only the leader writes snapshot and hash, and only while it holds the lock"): every
transaction that creates, sets or deletes `P/snapshot` or `P/hash` comes from the
session owning the lowest lock contender under `P/coordinator` at that zxid. Closing sessions
(expiry or close) delete their ephemerals and are not writes.

Prints one JSON object (with --cluster repeated: one such object per cluster, by path): {"txns", "writes", "commits": [{"zxid", "session", "key", "snapshot"
(keys), "hash", "time_ms"}], "violations": [text], "sessions": {session: key}, "closes":
[{"zxid", "session", "key", "time_ms"}] (pod sessions that ended: closed or expired, their nodes
gone), "contenders_seen"}. `time_ms` is the server's clock when it logged the transaction
(read from the log's own transaction headers: the toolkit prints whole seconds only).
Exit codes: 0 ran (violations are in the output), 1 cannot read the log (or the toolkit failed),
2 usage, 3 no member of an ensemble holds the whole history.
"""
import argparse
import glob
import json
import os
import re
import struct
import subprocess
import sys

RECORD = re.compile(r"^\S+, \S+ \S+ \S+ session (0x[0-9a-f]+) cxid \S+ zxid (0x[0-9a-f]+) (\w+)(.*)$")
JARS = ["slf4j-api", "log4j-1.2", "slf4j-log4j12", "commons-cli"]


class LogError(Exception):
    pass


def header_times(log):
    """zxid -> time (ms) of every transaction in one log file, and how many records it holds, from the binary format: a 16-byte
    file header, then records of crc (8), length (4), the transaction (its header: client id 8,
    cxid 4, zxid 8, time 8, type 4) and an end byte; a zero length ends the (preallocated) file."""
    times = {}
    count = 0
    with open(log, "rb") as f:
        data = f.read()
    if data[:4] != b"ZKLG":
        raise LogError(f"{log}: not a ZooKeeper transaction log (no ZKLG magic)")
    i = 16
    while i + 12 <= len(data):
        (length,) = struct.unpack_from(">i", data, i + 8)
        if length <= 0 or i + 12 + length > len(data):
            break
        count += 1
        if length >= 32:
            _, _, zxid, time_ms = struct.unpack_from(">qiqq", data, i + 12)
            times.setdefault(zxid, time_ms)
        i += 12 + length + 1
    return times, count


def records(data_dir):
    """(session, zxid, type, rest of the printed record, time in ms) of every transaction."""
    logs = sorted(glob.glob(os.path.join(data_dir, "version-2", "log.*")),
                  key=lambda p: int(p.rsplit(".", 1)[1], 16))
    cp = ":".join(["/usr/share/java/zookeeper.jar"] +
                  [f"/usr/share/java/{j}.jar" for j in JARS if os.path.exists(f"/usr/share/java/{j}.jar")])
    for log in logs:
        times, count = header_times(log)
        out = subprocess.run(
            ["java", "-cp", cp, "org.apache.zookeeper.server.persistence.TxnLogToolkit", "-d", log],
            capture_output=True, check=False)
        if out.returncode != 0:
            raise LogError(f"TxnLogToolkit failed on {log} (exit {out.returncode}): "
                           f"{out.stderr.decode('utf-8', 'replace').strip()[-2000:]}")
        printed = 0
        current = None
        seen = set()
        # latin-1: one char per byte, so the binary length prefixes of multi sub-records stay
        # exactly 4 chars wide.
        for line in out.stdout.decode("latin-1").split("\n"):
            m = RECORD.match(line)
            if m:
                if current and current[1] not in seen:
                    seen.add(current[1])
                    yield current
                printed += 1
                zxid = int(m.group(2), 16)
                current = [int(m.group(1), 16), zxid, m.group(3), m.group(4), times.get(zxid)]
            elif current:
                current[3] += "\n" + line
        if current and current[1] not in seen:
            yield current
        # A member brought back in line may log a transaction again (the same zxid, the same
        # transaction): each is replayed once.
        if printed != count:
            raise LogError(f"{log}: the toolkit printed {printed} transactions, the log holds "
                           f"{count}: a record this script cannot read")


SUB = re.compile(r"(create2|createContainer|create|setData|delete|check|error):")


def be32(text, i):
    b = text[i:i + 4]
    return int.from_bytes(b.encode("latin-1"), "big") if len(b) == 4 else -1


def multi_ops(rest):
    """Sub-records of a multi as TxnLogToolkit prints them: `op:` then the raw record, whose
    path (and data) are each preceded by a 4-byte big-endian length."""
    out = []
    for m in SUB.finditer(rest):
        op, i = m.group(1), m.end()
        if op == "error":
            return []  # a failed multi changes nothing
        n = be32(rest, i)
        if n <= 0 or n > 4096 or rest[i + 4:i + 5] != "/":
            continue
        path = rest[i + 4:i + 4 + n]
        # The toolkit prints record bytes through a UTF-8 decoder, so a length byte above 0x7f
        # may come out as a 3-byte replacement character: data is read from what follows the
        # path (JSON up to its own end, a hash as its 64 hex digits), never by its length.
        tail = rest[i + 4 + n:]
        out.append(("create" if op.startswith("create") else op, path, tail))
    return out


def ops(kind, rest):
    """(op, path, data or the text after the path) of one transaction; a multi gives several."""
    rest = rest.strip(" ")
    if kind == "multi":
        return multi_ops(rest)
    if kind in ("create", "create2", "createContainer", "createTTL"):
        path, _, tail = rest.partition(",")
        return [("create", path, tail)]
    if kind == "setData":
        path, _, tail = rest.partition(",")
        return [("setData", path, tail)]
    if kind == "delete":
        return [("delete", rest.strip().lstrip("'"), "")]
    return []


def json_in(text):
    """The JSON object at the start of `text` (after the data's 4-byte length). A length byte may
    itself be `{` (0x7b: a 1147-byte snapshot is 00 00 04 7b), so each `{` among the first
    characters is tried in turn."""
    start = 0
    for _ in range(5):
        i = text.find("{", start)
        if i < 0:
            return None
        try:
            value, _ = json.JSONDecoder().raw_decode(text[i:])
            return value
        except ValueError:
            start = i + 1
    return None


def hex64(text):
    m = re.search(r"[0-9a-f]{64}", text)
    return m.group(0) if m else text.split(",")[0].strip()


def lock_seq(path):
    m = re.search(r"(\d+)$", path)
    return int(m.group(1)) if m else -1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, action="append",
                   help="the ZooKeeper data folder (holding version-2/); repeat for every member "
                        "of an ensemble")
    p.add_argument("--cluster", required=True, action="append",
                   help="the cluster path P, e.g. /ochopod/clusters/ns.cl; repeated, the output is "
                        "one object per cluster, by path")
    args = p.parse_args()
    for data in args.data:
        if not os.path.isdir(os.path.join(data, "version-2")):
            print(f"zkfence.py: no version-2/ in {data}: pass the server's data folder", file=sys.stderr)
            return 1
    try:
        histories = {data: list(records(data)) for data in args.data}
    except (LogError, OSError) as e:
        print(f"zkfence.py: {e}", file=sys.stderr)
        return 1
    every, why = complete_history(histories)
    if every is None:
        print(f"zkfence.py: no member holds the whole history: {why}", file=sys.stderr)
        return 3
    results = {c: check(c, every) for c in args.cluster}
    for r in results.values():
        r["history"] = why
    json.dump(results[args.cluster[0]] if len(args.cluster) == 1 else results, sys.stdout)
    sys.stdout.write("\n")
    return 0


def gaps(zxids):
    """Where a member's history has holes: within each epoch (zxid >> 32) the counters
    (zxid & 0xffffffff) of the committed transactions run 1, 2, 3... without a hole."""
    by_epoch = {}
    for z in zxids:
        by_epoch.setdefault(z >> 32, []).append(z & 0xFFFFFFFF)
    holes = []
    for epoch, counters in sorted(by_epoch.items()):
        counters.sort()
        expected = 1
        for c in counters:
            if c != expected:
                holes.append(f"epoch {epoch}: {expected:#x}..{c - 1:#x}")
            expected = c + 1
    return holes


def complete_history(histories):
    """The history to replay: with one folder, its own; with an ensemble's members, the longest
    history without holes. A member brought back in line by a snapshot (SNAP) lacks the
    transactions it skipped, and merging members' logs would add proposals a member logged
    that were never committed (its leader died first): neither can be replayed. Returns
    (records, the folder they came from) or (None, why not)."""
    if len(histories) == 1:
        return next(iter(histories.items()))[::-1]
    whole = []
    why = []
    for data, recs in histories.items():
        holes = gaps([r[1] for r in recs])
        if holes:
            why.append(f"{data}: {len(holes)} holes ({', '.join(holes[:3])})")
        else:
            whole.append((len(recs), data))
    if not whole:
        return None, "; ".join(why)
    _, best = max(whole)
    return histories[best], best


def check(cluster, every):
    """The fence of one cluster over every transaction (see the module's doc)."""
    base = cluster.rstrip("/")
    coord, pods = base + "/coordinator/", base + "/pods/"
    snapshot, hashp = base + "/snapshot", base + "/hash"
    contenders = {}  # path -> session
    sessions = {}  # session -> pod key (from its pod node)
    seen = set()
    commits, violations, closes = [], [], []
    txns = writes = 0
    for session, zxid, kind, rest, time_ms in every:
        txns += 1
        if kind == "closeSession":
            for path in [c for c, s in contenders.items() if s == session]:
                del contenders[path]
            if session in sessions:
                closes.append({"zxid": zxid, "session": session, "key": sessions[session],
                               "time_ms": time_ms})
            continue
        todo = ops(kind, rest)
        touches = [o for o in todo if o[1] in (snapshot, hashp) and o[0] in ("create", "setData", "delete")]
        if touches:
            writes += 1
            holder = min(contenders.items(), key=lambda kv: lock_seq(kv[0]), default=None)
            if holder is None or holder[1] != session:
                who = sessions.get(session, "?")
                violations.append(
                    f"zxid {zxid:#x}: session {session:#x} (pod {who}) wrote "
                    f"{', '.join(o[0] + ' ' + o[1] for o in touches)} while the lock holder was "
                    f"{'nobody' if holder is None else holder[0] + ' of session ' + hex(holder[1])}")
            snap = next((json_in(o[2]) for o in touches if o[1] == snapshot and o[0] != "delete"), None)
            hval = next((hex64(o[2]) for o in touches if o[1] == hashp and o[0] != "delete"), None)
            if hval is not None:
                commits.append({"zxid": zxid, "session": session, "key": sessions.get(session),
                                "snapshot": sorted(snap) if isinstance(snap, dict) else None,
                                "hash": hval, "time_ms": time_ms})
        for op, path, _ in todo:
            if path.startswith(coord) and "__lock__" in path:
                if op == "create":
                    contenders[path] = session
                    seen.add(path)
                elif op == "delete":
                    contenders.pop(path, None)
            elif path.startswith(pods) and op == "create":
                sessions[session] = path[len(pods):].split(".", 1)[0]
    return {"txns": txns, "writes": writes, "commits": commits, "violations": violations,
            "sessions": {hex(s): k for s, k in sessions.items()}, "closes": closes,
            "contenders_seen": len(seen)}


if __name__ == "__main__":
    sys.exit(main())
