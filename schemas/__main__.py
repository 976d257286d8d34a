"""Write ``schemas/*.schema.json`` from the models: ``python -m schemas [--check]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from schemas import SCHEMA_FILES

HERE = Path(__file__).parent


def rendered() -> dict[str, str]:
    return {name: json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
            for name, model in SCHEMA_FILES.items()}


def main(argv: list[str]) -> int:
    stale = []
    for name, text in rendered().items():
        path = HERE / name
        if "--check" in argv:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("stale: " + ", ".join(stale) + " — run 'make schemas'", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
