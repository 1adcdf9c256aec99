"""`make bench`: run every benchmarks/bench_*.py and print its ratios."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def main(names: list[str]) -> int:
    sys.path.insert(0, str(ROOT.parent))
    modules = sorted(p.stem for p in ROOT.glob("bench_*.py"))
    if names:
        modules = [m for m in modules if any(n in m for n in names)]
    for module in modules:
        print(f"\n=== {module} ===", flush=True)
        start = time.perf_counter()
        importlib.import_module(f"benchmarks.{module}").main()
        print(f"({module}: {time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
