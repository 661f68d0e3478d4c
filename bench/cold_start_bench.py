"""Issue 7: each function's cold start, as Lambda pays it: a fresh interpreter that
imports the handler and serves its first invocation, with only the built layer and the
function's folder on the path (like /opt/python and /var/task).

Reported per function: import, first invoke, and both together (the goal is < 300 ms),
as medians over `RUNS` fresh processes; the interpreter's own start is listed apart.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import bench_env, save
from infra.build_layer import ROOT, build
from tests.test_layer_build import CASES

RUNS = 7

_PROBE = """
import json, sys, time
started = time.perf_counter()
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import app
imported = time.perf_counter()
spec = json.loads(sys.argv[3])
sys.path.insert(0, sys.argv[4])
from tests.lambda_events import LAMBDA_CONTEXT, http_api_event
event = ({"kind": "summary", "session_id": "nobody"} if spec is None else
         http_api_event(spec["method"], spec["path"], body=spec.get("body"),
                        route_key=spec.get("route_key")))
ready = time.perf_counter()
app.handler(event, LAMBDA_CONTEXT if spec else None)
invoked = time.perf_counter()
print(json.dumps({"import_ms": (imported - started) * 1000, "invoke_ms": (invoked - ready) * 1000}))
"""


def _interpreter_start_ms() -> float:
    runs = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True)
        runs.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(runs), 1)


def run(runs: int = RUNS) -> dict[str, Any]:
    layer = build(ROOT / "build" / "layer")
    functions: dict[str, Any] = {}
    with bench_env("cold") as (redis_url, prefix), tempfile.TemporaryDirectory() as folder:
        probe_root = Path(folder)
        (probe_root / "tests").mkdir()
        (probe_root / "tests" / "__init__.py").touch()
        (probe_root / "tests" / "lambda_events.py").write_text(
            (ROOT / "tests" / "lambda_events.py").read_text())
        env = {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "PATH": "/usr/bin:/bin",
               "AUDIO_DIR": str(probe_root / "audio"), "HOME": folder}
        for name, (spec, _) in sorted(CASES.items()):
            samples = []
            for _ in range(runs):
                done = subprocess.run(
                    [sys.executable, "-I", "-S", "-c", _PROBE, str(ROOT / "functions" / name),
                     str(layer), json.dumps(spec), str(probe_root)],
                    cwd=ROOT / "functions" / name, env=env, capture_output=True, text=True,
                    check=True)
                samples.append(json.loads(done.stdout.strip().splitlines()[-1]))
            imports = [s["import_ms"] for s in samples]
            invokes = [s["invoke_ms"] for s in samples]
            totals = [s["import_ms"] + s["invoke_ms"] for s in samples]
            functions[name] = {"import_ms": round(statistics.median(imports), 1),
                               "first_invoke_ms": round(statistics.median(invokes), 1),
                               "cold_start_ms": round(statistics.median(totals), 1)}
    result = {"setup": {"runs_per_function": runs, "python": sys.version.split()[0],
                        "goal_ms": 300},
              "interpreter_start_ms": _interpreter_start_ms(), "functions": functions}
    save("cold_start", result)
    return result


if __name__ == "__main__":
    run()
