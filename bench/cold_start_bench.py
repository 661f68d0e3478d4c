"""Issue 14: each function's cold start on what the real `sam build` made, as Lambda pays it.

A fresh Python 3.12 (`-I -S -B`, nothing written) imports the built handler with only its
folder (/var/task) and its layers' `python/` (/opt/python) on the path, and serves its
first invocation. Twice per function: with the bytecode the build compiled, and from a
copy of the build without it (what `sam build` shipped before: every cold start compiles).
Medians over `RUNS` fresh processes each; the interpreter's own start is listed apart, and
the slowest imports of the handler (`-X importtime`) are named.

Beside them, the floor: a handler of one route that imports only FastAPI, Mangum and
redis-py, with this project's cold-start measures (`roleplay.web.cold_start`), on the
health function's layers, probed the same way. What a function costs above it is its
own routes, models and domain.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import bench_env, save
from infra.sam_build import ROOT, function_dir, layer_paths, python312, sam_build

RUNS = 7
GOAL_MS = 300

# function -> the HTTP API event of its first invocation (None: an asynchronous job event)
FIRST_EVENTS: dict[str, dict[str, Any] | None] = {
    "health": {"method": "GET", "path": "/api/health"},
    "characters": {"method": "GET", "path": "/api/characters"},
    "models": {"method": "GET", "path": "/api/chat/models"},
    "chat": {"method": "GET", "path": "/api/chat/sessions/nobody",
             "route_key": "GET /api/chat/sessions/{session_id}"},
    "tts": {"method": "POST", "path": "/api/tts", "body": {"text": "안녕하세요."}},
    "voices": {"method": "GET", "path": "/api/tts/voices"},
    "summarizer": None,
}

_PROBE = """
import json, sys, time
started = time.perf_counter()
sys.path[:0] = [sys.argv[1], *json.loads(sys.argv[2])]
import app
imported = time.perf_counter()
spec = json.loads(sys.argv[3])
sys.path.append(sys.argv[4])
from lambda_events import LAMBDA_CONTEXT, http_api_event
event = ({"kind": "summary", "session_id": "nobody"} if spec is None else
         http_api_event(spec["method"], spec["path"], body=spec.get("body"),
                        route_key=spec.get("route_key")))
ready = time.perf_counter()
app.handler(event, LAMBDA_CONTEXT if spec else None)
invoked = time.perf_counter()
print(json.dumps({"import_ms": (imported - started) * 1000, "invoke_ms": (invoked - ready) * 1000}))
"""


FLOOR_APP = """\
from roleplay.web import cold_start

# isort: split
import redis.asyncio  # noqa: F401
from fastapi import FastAPI
from mangum import Mangum

app = FastAPI()


@app.get("/api/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


handler = Mangum(app, lifespan="off")
cold_start.handler_imported()
"""
FLOOR_LAYERS_OF = "health"


def _floor_function(folder: Path) -> Path:
    """The floor's handler, compiled as the build compiles a function's."""
    folder.mkdir()
    (folder / "app.py").write_text(FLOOR_APP)
    subprocess.run([python312(), "-m", "compileall", "-q", str(folder)], check=True)
    return folder


def _without_bytecode(build: Path, copy: Path) -> Path:
    """The build as `sam build` shipped it before issue 14: sources only."""
    shutil.copytree(build, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return copy


def _probe(build: Path, name: str, env: dict[str, str], events: Path,
           flags: tuple[str, ...] = (), folder: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`folder`: the handler's folder, when it is not the function's own in `build`."""
    layers = json.dumps([str(path) for path in layer_paths(name, build)])
    folder = folder or function_dir(name, build)
    return subprocess.run(
        [python312(), "-I", "-S", "-B", *flags, "-c", _PROBE, str(folder),
         layers, json.dumps(FIRST_EVENTS[name]), str(events)],
        cwd=folder, env=env, capture_output=True, text=True, check=True)


def _medians(build: Path, name: str, env: dict[str, str], events: Path,
             runs: int, folder: Path | None = None) -> dict[str, float]:
    samples = [json.loads(_probe(build, name, env, events, folder=folder).stdout.strip().splitlines()[-1])
               for _ in range(runs)]
    return {"import_ms": round(statistics.median(s["import_ms"] for s in samples), 1),
            "first_invoke_ms": round(statistics.median(s["invoke_ms"] for s in samples), 1),
            "cold_start_ms": round(statistics.median(s["import_ms"] + s["invoke_ms"]
                                                     for s in samples), 1)}


def _slowest_imports(build: Path, name: str, env: dict[str, str], events: Path) -> dict[str, float]:
    """The handler's direct imports costing the most (cumulative ms, `-X importtime`)."""
    report = _probe(build, name, env, events, ("-X", "importtime")).stderr
    costs: dict[str, float] = {}
    for line in report.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, module = line.split("|")
        depth = (len(module) - len(module.lstrip()) - 1) // 2
        if depth == 1 and cumulative.strip().isdigit():
            costs[module.strip()] = int(cumulative) / 1000
    top = sorted(costs.items(), key=lambda item: -item[1])[:3]
    return {module: round(ms, 1) for module, ms in top}


def _interpreter_start_ms(runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([python312(), "-I", "-S", "-c", "pass"], check=True)
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 1)


def run(runs: int = RUNS) -> dict[str, Any]:
    build = sam_build()
    functions: dict[str, Any] = {}
    with bench_env("cold") as (redis_url, prefix), tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        (scratch / "events").mkdir()
        (scratch / "events" / "lambda_events.py").write_text(
            (ROOT / "tests" / "support" / "lambda_events.py").read_text())
        bare = _without_bytecode(build, scratch / "build-without-bytecode")
        env = {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "PATH": "/usr/bin:/bin",
               "AUDIO_DIR": str(scratch / "audio"), "HOME": folder,
               "PYTHONDONTWRITEBYTECODE": "1"}
        for name in sorted(FIRST_EVENTS):
            with_bytecode = _medians(build, name, env, scratch / "events", runs)
            without = _medians(bare, name, env, scratch / "events", runs)
            functions[name] = {
                **with_bytecode,
                "cold_start_without_bytecode_ms": without["cold_start_ms"],
                "import_without_bytecode_ms": without["import_ms"],
                "slowest_imports_ms": _slowest_imports(build, name, env, scratch / "events"),
            }
        floor = _medians(build, FLOOR_LAYERS_OF, env, scratch / "events", runs,
                         folder=_floor_function(scratch / "floor"))
    result = {"setup": {"runs_per_function": runs, "python": "3.12 (the Lambda runtime's)",
                        "build": "sam build (infra/sam/Makefile)", "goal_ms": GOAL_MS},
              "interpreter_start_ms": _interpreter_start_ms(runs), "functions": functions,
              "floor": {"what": "one route; FastAPI, Mangum and redis-py imported; "
                                "roleplay.web.cold_start's measures", **floor}}
    save("cold_start", result)
    return result


if __name__ == "__main__":
    run()
