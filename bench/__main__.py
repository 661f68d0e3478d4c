"""`python -m bench [name ...]`: runs the benchmarks (all by default), saving
bench/results/<name>.json, then gathers them into latest.json, latest.md and the plots."""

from __future__ import annotations

import importlib
import sys
import time

from bench import BENCHMARKS, report


def main(names: list[str]) -> int:
    started = time.monotonic()
    for name in names or BENCHMARKS:
        if name not in BENCHMARKS:
            print(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
            return 2
        print(f"== {name}", flush=True)
        importlib.import_module(f"bench.{name}_bench").run()
    report.write()
    print(f"benchmarks took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
