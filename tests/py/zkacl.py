#!/usr/bin/env python3
"""Tries to change every node of a ZooKeeper subtree as an independent client (kazoo).

    zkacl.py --hosts H PATH

The credential comes from the environment, never the command line: ZKACL_AUTH=user:password
authenticates with digest auth; unset, the client authenticates as nobody. For every node at
or below PATH it reads the data and the ACL, then tries to overwrite the data, to create a
child, and (below PATH) to delete the node, and prints one JSON object:
{"<path>": {"read": "ok"|error, "acl": ["scheme:id:perms", ...], "set": ..., "create": ...,
"delete": ...}} where each attempt is "allowed" or the name of kazoo's exception
("NoAuthError", ...). Exit codes: 0 done, 1 ZooKeeper error, 2 usage.
"""
import argparse
import json
import logging
import os
import sys

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError


def attempt(op):
    try:
        op()
        return "allowed"
    except Exception as e:  # noqa: BLE001 - the exception's name is the answer
        return type(e).__name__


def perms(p):
    return "".join(c for c, bit in zip("rwcda", (1, 2, 4, 8, 16)) if p & bit)


def walk(zk, path, top, out):
    try:
        data, _ = zk.get(path)
        acls, _ = zk.get_acls(path)
        children = sorted(zk.get_children(path))
    except NoNodeError:
        return
    node = {
        "read": "ok",
        "acl": sorted(f"{a.id.scheme}:{a.id.id}:{perms(a.perms)}" for a in acls),
    }
    node["set"] = attempt(lambda: zk.set(path, data))
    node["create"] = attempt(lambda: zk.create(path.rstrip("/") + "/intruder", b"x"))
    if path != top:
        node["delete"] = attempt(lambda: zk.delete(path))
    out[path] = node
    for name in children:
        walk(zk, path.rstrip("/") + "/" + name, top, out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", required=True)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("path")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    auth = os.environ.get("ZKACL_AUTH")
    auth_data = [("digest", auth)] if auth else None
    zk = KazooClient(hosts=args.hosts, timeout=args.timeout, auth_data=auth_data)
    try:
        zk.start(timeout=args.timeout)
        out = {}
        walk(zk, args.path, args.path, out)
        json.dump(out, sys.stdout, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    except Exception as e:  # noqa: BLE001 - report any failure as exit 1
        print(f"zkacl.py {args.path}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        try:
            zk.stop()
            zk.close()
        except Exception:  # noqa: BLE001
            pass


if __name__ == "__main__":
    sys.exit(main())
