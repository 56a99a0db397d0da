"""Reading and validating a library file: seconds for one class of N distinct descriptors
(plus 1% duplicates, each reported), the worst case for the duplicate check.

    python bench/validate_library.py --descriptors 1000000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--descriptors", type=int, default=1_000_000)
    args = ap.parse_args()
    from whyclip.ingest.readers import read_library

    n = args.descriptors
    descriptors = [f"a descriptor numbered {i}" for i in range(n)] + [
        f"a descriptor numbered {i}" for i in range(n // 100)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "one_class.json"
        path.write_text(json.dumps({"one class": descriptors}), encoding="utf-8")
        t = time.perf_counter()
        parsed = read_library(path)
        seconds = time.perf_counter() - t
        size = path.stat().st_size
    assert len(parsed.classes[0][1]) == n
    print(
        json.dumps(
            {
                "descriptors": n,
                "duplicates": len(parsed.warnings),
                "file_mb": round(size / 1e6, 1),
                "read_and_validate_s": round(seconds, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
