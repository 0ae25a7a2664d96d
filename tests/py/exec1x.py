#!/usr/bin/env python3
"""Runs a pod's tool the way Ochopod 1.x tooling does (`exec` of the 1.x toolset).

    exec1x.py --url http://IP:PORT [--field NAME=PATH ...] TOOL [ARG ...]

Like the 1.x toolset: the command line goes in the `X-Shell` header, joined with single
spaces; every token of it that names an existing file is uploaded with `requests`' `files=`
(a multipart/form-data body), the token itself as the field name; the request is a POST to
URL/exec. `--field NAME=PATH` adds an upload named NAME with PATH's content (to send names the
1.x toolset could send but a test cannot create, e.g. `..`).

Prints one JSON line {"status": HTTP status, "body": the JSON reply} on stdout.
Exit codes: 0 when a reply came, 1 on a transport error, 2 on usage.
"""
import argparse
import json
import os
import sys

import requests


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--field", action="append", default=[])
    parser.add_argument("cmdline", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if not args.cmdline:
        parser.error("give the tool's command line")
    files = {}
    for token in args.cmdline:
        if os.path.isfile(token):
            with open(token, "rb") as f:
                files[token] = f.read()
    for field in args.field:
        name, _, path = field.partition("=")
        with open(path, "rb") as f:
            files[name] = f.read()
    headers = {"X-Shell": " ".join(args.cmdline)}
    try:
        reply = requests.post(
            args.url.rstrip("/") + "/exec", timeout=60, data=None, headers=headers, files=files
        )
    except requests.RequestException as e:
        print("exec1x: %s" % e, file=sys.stderr)
        return 1
    print(json.dumps({"status": reply.status_code, "body": reply.json()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
