#!/usr/bin/env python3
"""record.py OUT ARG...: append the arguments it was given to OUT (one JSON list a line)."""
import json
import sys

with open(sys.argv[1], "a") as out:
    out.write(json.dumps(sys.argv[2:]) + "\n")
