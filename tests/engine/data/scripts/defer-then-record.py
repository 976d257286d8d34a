#!/usr/bin/env python3
"""The first run exits 7 (SCRIPT DEFER 7 puts it off); the next records its arguments."""
import json
import os
import sys

if not os.path.exists("deferred-once"):
    open("deferred-once", "w").close()
    sys.exit(7)
with open(sys.argv[1], "a") as out:
    out.write(json.dumps(sys.argv[2:]) + "\n")
