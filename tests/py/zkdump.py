#!/usr/bin/env python3
"""Independent ZooKeeper reader/writer for the end-to-end suites (kazoo, not our Rust client).

    zkdump.py --hosts H dump PATH             print the subtree at PATH as JSON (null if missing)
    zkdump.py --hosts H create PATH [DATA]    create a persistent node (parents too)
    zkdump.py --hosts H set PATH DATA         overwrite a node's data
    zkdump.py --hosts H delete PATH [-r]      delete a node (-r: with its children)

A dumped node is {"name", "path", "data" (UTF-8 text or null), "data_hex" (when not UTF-8),
"ephemeral_owner" (session id, 0 when persistent), "czxid", "mzxid", "version", "children": [...]},
children sorted by name. Nodes that vanish while the tree is read are left out.
Exit codes: 0 ok, 1 ZooKeeper error (message on stderr), 2 usage.
"""
import argparse
import json
import logging
import sys

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError


def dump(zk, path):
    try:
        data, stat = zk.get(path)
        children = sorted(zk.get_children(path))
    except NoNodeError:
        return None
    node = {
        "name": path.rstrip("/").rsplit("/", 1)[-1],
        "path": path,
        "data": None,
        "ephemeral_owner": stat.ephemeralOwner,
        "czxid": stat.czxid,
        "mzxid": stat.mzxid,
        "version": stat.version,
        "children": [],
    }
    if data is not None:
        try:
            node["data"] = data.decode("utf-8")
        except UnicodeDecodeError:
            node["data_hex"] = data.hex()
    for name in children:
        child = dump(zk, path.rstrip("/") + "/" + name)
        if child is not None:
            node["children"].append(child)
    return node


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", required=True, help="ZooKeeper connection string, e.g. 127.0.0.1:2181")
    p.add_argument("--timeout", type=float, default=10.0, help="connection timeout, seconds")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("path")
    c = sub.add_parser("create")
    c.add_argument("path")
    c.add_argument("data", nargs="?", default="")
    s = sub.add_parser("set")
    s.add_argument("path")
    s.add_argument("data")
    r = sub.add_parser("delete")
    r.add_argument("path")
    r.add_argument("-r", "--recursive", action="store_true")
    args = p.parse_args()

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    zk = KazooClient(hosts=args.hosts, timeout=args.timeout)
    try:
        zk.start(timeout=args.timeout)
        if args.cmd == "dump":
            out = dump(zk, args.path)
        elif args.cmd == "create":
            out = zk.create(args.path, args.data.encode(), makepath=True)
        elif args.cmd == "set":
            out = zk.set(args.path, args.data.encode()).version
        else:
            zk.delete(args.path, recursive=args.recursive)
            out = True
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
        return 0
    except (KazooException, Exception) as e:  # noqa: BLE001 - report any failure as exit 1
        print(f"zkdump.py {args.cmd} {getattr(args, 'path', '')}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        try:
            zk.stop()
            zk.close()
        except Exception:  # noqa: BLE001
            pass


if __name__ == "__main__":
    sys.exit(main())
