#!/usr/bin/env python3
"""can_configure hook: configure only once the ensemble has its full size.

The cluster view arrives on stdin. Starting a member before every member is known would start a
smaller ensemble first and a second one later; waiting makes the first configuration the real
one. The size is ZK_ENSEMBLE_SIZE (default 3)."""
import json
import os
import sys

want = int(os.environ.get("ZK_ENSEMBLE_SIZE", "3"))
have = len(json.load(sys.stdin)["pods"])
if have < want:
    sys.exit(f"{have} of {want} ensemble members registered; waiting for the others")
