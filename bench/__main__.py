"""`python -m bench [name ...]`: runs the benchmarks (all by default), saving bench/results/<name>.json."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("context", "limiter", "tts", "cold_start")


def main(names: list[str]) -> int:
    for name in names or BENCHMARKS:
        if name not in BENCHMARKS:
            print(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
            return 2
        print(f"== {name}", flush=True)
        importlib.import_module(f"bench.{name}_bench").run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
