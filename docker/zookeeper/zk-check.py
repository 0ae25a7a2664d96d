#!/usr/bin/env python3
"""Sanity check of a ZooKeeper member: `mntr` on 127.0.0.1:2181.

Prints the member's role and a few figures as a JSON object (the pod's metrics in /info and
`ochopod ls`); exits 1 when the server does not serve (not part of a quorum)."""
import json
import socket
import sys

try:
    with socket.create_connection(("127.0.0.1", 2181), timeout=3) as s:
        s.sendall(b"mntr")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
except OSError as e:
    sys.exit(f"zookeeper on 127.0.0.1:2181: {e}")
stats = dict(line.split("\t", 1) for line in data.decode().splitlines() if "\t" in line)
if "zk_server_state" not in stats:
    sys.exit(f"zookeeper does not serve: {data.decode().strip()!r}")
keep = ["zk_server_state", "zk_znode_count", "zk_num_alive_connections", "zk_synced_followers"]
print(json.dumps({k[3:]: stats[k] for k in keep if k in stats}))
