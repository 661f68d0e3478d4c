"""Issue 30: Server B against LiteLLM's proxy, side by side in one run on this machine.

One instant OpenAI-compatible stub upstream (bench/stub_llm.py, behind a counter of the
completions it answers) serves both. Server B runs as `python -m local_runner` (one
process, on the bench's own Redis), LiteLLM's proxy as `litellm --config ... --num_workers 1`
from its own virtualenv (`.venv-litellm`, infra/litellm/requirements.txt; no database, no
logging callbacks, a master key as any deployment has). Each, alone, is pinned to core 0
(`taskset -c 0`); wrk, the stub and Redis share core 1. The direct row is the stub itself,
moved to core 0 for its own cells.

wrk (one thread, 1, 20 and 64 connections, 2 s warm-up then 10 s) sends text-only chat
turns, every message different (bench/peers_wrk.lua puts a counter in each: a message sent
again unchanged is a retry, which Server B answers from its store without the upstream):

- Server B: `POST /api/chat` over a pool of 200 sessions of 200 anonymous users (a signed
  cookie each), with the persona and the new line; Server B loads the session, builds the
  persona prompt from it, calls the upstream and stores both messages.
- LiteLLM and the direct stub: `POST /chat/completions`, the request a stateless client
  sends for the same turn: the persona as the system message, eight earlier exchanges and
  the new line. LiteLLM authenticates, routes and relays it; it stores nothing.

So the two proxies do different work per turn, and that is the comparison: what a turn
costs with the conversation kept by the server against what a relay costs. CPU per turn is
the process's CPU time (its threads and any children, from /proc, schedstat-exact) over
the run divided by the replies wrk counted; Redis's CPU, which Server B's turn also
spends, is reported beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.harness import RESULTS, ROOT, cpu_ms, machine, private_redis, save

LEVELS = (1, 20, 64)
SESSIONS = 200
RUN_S = int(os.environ.get("PEERS_RUN_S", "10"))
WARMUP_S = int(os.environ.get("PEERS_WARMUP_S", "2"))
EDGE_S = 1
PROXY_CORE, LOAD_CORE = 0, 1
LUA = ROOT / "bench" / "peers_wrk.lua"
LITELLM_VENV = ROOT / ".venv-litellm"
LITELLM_REQUIREMENTS = ROOT / "infra" / "litellm" / "requirements.txt"
PERFORMANCE_DOC = ROOT / "docs" / "performance.md"
MARKERS = ("<!-- bench:peers:start -->", "<!-- bench:peers:end -->")
COOKIE_NAME = "rp_anon"
START_TIMEOUT_S = 240.0
"""LiteLLM's proxy takes seconds to import on one core, more on a loaded machine."""
TARGETS = ("direct", "server_b", "litellm")
LABELS = {"direct": "direct stub", "server_b": "Server B", "litellm": "LiteLLM"}
GOAL_CPU_MS = 1.5
GOAL_TIMES_LITELLM = 6.0
GOAL_P99_OVER_P50 = 5.0
PERSONA = "밝고 다정한 바리스타 민지. 손님의 이야기를 잘 들어 주고, 비 오는 날을 좋아한다."
LINE = "오늘은 카페에서 라떼를 마시며 창밖의 비를 바라봤어. 너는 어때?"
HISTORY_EXCHANGES = 8


# -- the stub upstream, counting the completions it answers ---------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_completions = 0


async def counted_stub(scope: Scope, receive: Receive, send: Send) -> None:
    """bench/stub_llm.py's app, counting chat completions; `GET /count` answers the count,
    so the bench can show that every turn reached the upstream."""
    global _completions
    from bench.stub_llm import app

    if scope["type"] == "http" and scope["path"] == "/count":
        body = str(_completions).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["type"] == "http" and scope["path"].endswith("/chat/completions"):
        _completions += 1
    await app(scope, receive, send)


# -- the tools: wrk, taskset -----------------------------------------------------------------

def ensure_wrk() -> str:
    """wrk's path; installs Debian's `wrk` when it is missing and this user may (root, or
    passwordless sudo), else stops with the one command to run."""
    found = shutil.which("wrk")
    if found:
        return found
    command = "apt-get update && apt-get install -y wrk"
    if shutil.which("apt-get") is None:
        raise SystemExit("peers: needs wrk (https://github.com/wg/wrk) on the PATH, and this "
                         "system has no apt-get: install wrk")
    if os.geteuid() == 0:
        as_root: list[str] = []
    elif shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        as_root = ["sudo", "-n"]
    else:
        raise SystemExit(f"peers: needs wrk, and installing it needs root; run: sudo sh -c '{command}'")
    print("peers: installing wrk (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        if subprocess.run([*as_root, *step], env=env).returncode != 0:
            raise SystemExit(f"peers: apt-get could not install wrk; run: {command}")
    found = shutil.which("wrk")
    if not found:
        raise SystemExit(f"peers: apt-get installed wrk, yet it is not on the PATH; run: {command}")
    return found


def _check_machine() -> None:
    if shutil.which("taskset") is None:
        raise SystemExit("peers: needs taskset (util-linux) to pin each process to its core")
    if len(os.sched_getaffinity(0)) < 2 or not {PROXY_CORE, LOAD_CORE} <= os.sched_getaffinity(0):
        raise SystemExit(f"peers: needs cores {PROXY_CORE} and {LOAD_CORE}: the proxy alone on one, "
                         "the load generator on the other")


def litellm_command() -> tuple[Path, str]:
    """The proxy's executable in .venv-litellm and the litellm version installed there."""
    executable = LITELLM_VENV / "bin" / "litellm"
    if not executable.exists():
        raise SystemExit("peers: LiteLLM's proxy is not installed; run: make bench BENCH=peers "
                         "(it makes .venv-litellm from infra/litellm/requirements.txt)")
    version = subprocess.run(
        [str(LITELLM_VENV / "bin" / "python"), "-c",
         "from importlib.metadata import version; print(version('litellm'))"],
        capture_output=True, text=True, check=True).stdout.strip()
    return executable, version


def pin(pid: int, core: int) -> None:
    """Moves every thread of `pid` to `core` (threads started later inherit it)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task), {core})


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in task.read_text().split()]
    return found


def tree_cpu_ms(pid: int) -> float:
    """CPU time of `pid`, its live descendants and the children it has reaped, in ms."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += cpu_ms(current)
        todo += _children(current)
    with contextlib.suppress(OSError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[13]) + int(fields[14])) * 1000 / os.sysconf("SC_CLK_TCK")  # cutime, cstime
    return total


def redis_cpu_ms(url: str) -> float:
    import redis

    with redis.Redis.from_url(url) as client:
        info = client.info("cpu")
    return (float(info["used_cpu_user"]) + float(info["used_cpu_sys"])) * 1000


def redis_pid(url: str) -> int:
    import redis

    with redis.Redis.from_url(url) as client:
        return int(client.info("server")["process_id"])


# -- the processes ---------------------------------------------------------------------------

class Process:
    """A started process: its base URL and pid, and how long it took to answer."""

    def __init__(self, base_url: str, pid: int, ready_s: float) -> None:
        self.base_url, self.pid, self.ready_s = base_url, pid, ready_s


@contextmanager
def _started(command: list[str], ready_url: str, env: dict[str, str], cwd: Path,
             log: Path) -> Iterator[Process]:
    """Runs `command` (output to `log`) until the block ends; yields once `ready_url` answers 200."""
    import httpx

    started = time.monotonic()
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=output)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[3]} exited with {process.returncode}: "
                                   f"{log.read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(ready_url, timeout=5).status_code == 200:
                    break
            if time.monotonic() - started > START_TIMEOUT_S:
                raise RuntimeError(f"{ready_url} did not answer in {START_TIMEOUT_S:.0f} s")
            time.sleep(0.1)
        base_url = ready_url.split("/", 3)
        yield Process(f"{base_url[0]}//{base_url[2]}", process.pid, time.monotonic() - started)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _port() -> int:
    from tests.support.upstream_server import free_port

    return free_port()


def _pinned(core: int, *command: str) -> list[str]:
    return ["taskset", "-c", str(core), *command]


def _python_path() -> str:
    return f"{ROOT}{os.pathsep}{ROOT / 'layers/roleplay/python'}"


@contextmanager
def stub(folder: Path) -> Iterator[Process]:
    port = _port()
    env = {**os.environ, "PYTHONPATH": _python_path()}
    with _started(_pinned(LOAD_CORE, sys.executable, "-m", "uvicorn", "bench.peers_bench:counted_stub",
                          "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                          "--no-access-log"),
                  f"http://127.0.0.1:{port}/count", env, ROOT, folder / "stub.log") as served:
        yield served


@contextmanager
def server_b(folder: Path, redis_url: str, upstream: str, cookie_secret: str) -> Iterator[Process]:
    """`python -m local_runner`, as `make run` starts it, sign-in off; the caps on users and
    on cookies per address raised so 200 anonymous users from 127.0.0.1 are all served."""
    port = _port()
    env = {key: value for key, value in os.environ.items() if key not in ("JWT_SECRET", "DATA_DIR")}
    env |= {"PYTHONPATH": _python_path(), "HOST": "127.0.0.1", "PORT": str(port),
            "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": f"bench-peers-{secrets.token_hex(3)}:",
            "LLM_BASE_URL": upstream, "LLM_SERVICE": "vllm", "DATA_DIR": str(folder / "data"),
            "MAX_CONCURRENT_USERS": "10000", "ANON_COOKIES_PER_ADDRESS": "10000",
            "ANON_COOKIE_SECRET": cookie_secret}
    with _started(_pinned(PROXY_CORE, sys.executable, "-m", "local_runner"),
                  f"http://127.0.0.1:{port}/api/health", env, ROOT, folder / "server_b.log") as served:
        yield served


@contextmanager
def litellm(folder: Path, executable: Path, upstream: str, master_key: str) -> Iterator[Process]:
    """LiteLLM's proxy, one worker, no database: a model `stub` routed to the stub upstream.
    Its environment is only what it needs (no DATABASE_URL, no Redis, no callbacks); the
    model cost map is the one the package ships (this machine has no Internet to fetch it)."""
    port = _port()
    config = folder / "litellm.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "model_list": [{"model_name": "stub", "litellm_params": {
            "model": "openai/stub", "api_base": f"{upstream}/v1", "api_key": "x"}}],
        "general_settings": {"master_key": master_key}}, indent=2) + "\n")
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"}
    with _started(_pinned(PROXY_CORE, str(executable), "--config", str(config), "--host", "127.0.0.1",
                          "--port", str(port), "--num_workers", "1"),
                  f"http://127.0.0.1:{port}/health/liveliness", env, folder,
                  folder / "litellm.log") as served:
        yield served


# -- the requests ----------------------------------------------------------------------------

def openai_body() -> dict[str, Any]:
    """A stateless client's request for a turn: persona, eight earlier exchanges, the line."""
    from bench.stub_llm import REPLY

    history: list[dict[str, str]] = []
    for n in range(HISTORY_EXCHANGES):
        history += [{"role": "user", "content": f"{n}. {LINE}"}, {"role": "assistant", "content": REPLY}]
    return {"model": "stub", "max_tokens": 128, "temperature": 0.7,
            "messages": [{"role": "system", "content": PERSONA * 6}, *history,
                         {"role": "user", "content": f"@@N@@. {LINE}"}]}


def server_b_body() -> dict[str, Any]:
    return {"session_id": "@@SESSION@@", "persona": PERSONA, "max_tokens": 128, "tts_enabled": False,
            "messages": [{"role": "user", "content": f"@@N@@. {LINE}"}]}


def write_pool(path: Path, cookie_secret: str, level: int) -> None:
    """Session `peers<level>-<i>` of anonymous user `peers<i>`, for i < SESSIONS: a pool per
    connection count, so each count's turns are at the same depth of their sessions."""
    from roleplay.web.anonymous_client import signed_cookie

    lines = [f"peers{level}-{i}\t{COOKIE_NAME}={signed_cookie(cookie_secret.encode(), f'peers{i}')}"
             for i in range(SESSIONS)]
    path.write_text("\n".join(lines) + "\n")


def wrk_start(wrk: str, url: str, path: str, connections: int, seconds: int,
              env: dict[str, str]) -> subprocess.Popen[str]:
    command = _pinned(LOAD_CORE, wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s",
                      "-s", str(LUA), url)
    return subprocess.Popen(command, env={**os.environ, **env, "PEERS_PATH": path}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wrk_result(process: subprocess.Popen[str], seconds: int) -> dict[str, Any]:
    """What the script's `done` printed: replies, errors, latency percentiles (microseconds)."""
    stdout, stderr = process.communicate(timeout=seconds + 60)
    line = next((line for line in stdout.splitlines() if line.startswith("PEERS_JSON ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stdout[-1500:]} {stderr[-1500:]}")
    return dict(json.loads(line.removeprefix("PEERS_JSON ")))


def wait_idle(pid: int) -> None:
    """Until `pid` has finished what an ended wrk run left in flight (it keeps working on a
    closed connection's request): less than 1% of a core over a quarter second, 20 s at most."""
    deadline, last = time.monotonic() + 20, tree_cpu_ms(pid)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = tree_cpu_ms(pid)
        if now - last < 2.5:
            return
        last = now


def completions(upstream: str) -> int:
    import httpx

    return int(httpx.get(f"{upstream}/count", timeout=5).text)


def check_replies(targets: dict[str, tuple[str, str, dict[str, str], dict[str, Any]]]) -> None:
    """One turn through each, by hand: each must answer 200 with the stub's reply."""
    import httpx

    from bench.stub_llm import REPLY

    for name, (base, path, headers, body) in targets.items():
        sent = json.loads(json.dumps(body).replace("@@N@@", "check").replace("@@SESSION@@", "peers-check"))
        response = httpx.post(base + path, json=sent, headers=headers, timeout=30)
        if response.status_code != 200 or REPLY not in response.text:
            raise RuntimeError(f"{name} answered {response.status_code}: {response.text[:500]}")


# -- the run ---------------------------------------------------------------------------------

def _sample(watched: dict[str, int], redis_url: str, upstream: str) -> dict[str, float]:
    sample = {who: tree_cpu_ms(pid) for who, pid in watched.items()}
    sample |= {"redis": redis_cpu_ms(redis_url), "calls": completions(upstream), "at": time.monotonic()}
    return sample


def _cell(wrk: str, name: str, url: str, path: str, level: int, env: dict[str, str],
          watched: dict[str, int], redis_url: str, upstream: str) -> dict[str, Any]:
    """A warm-up run, then the measured one. Throughput and CPU are read over its middle
    RUN_S seconds (EDGE_S in from each end, both in steady state, so the turns in flight at
    either edge are counted at the one and not at the other), as upstream calls (one per
    turn) and CPU per call; latency is wrk's over the whole measured run."""
    wrk_result(wrk_start(wrk, url, path, level, WARMUP_S, {**env, "PEERS_TAG": f"w{secrets.token_hex(3)}"}),
               WARMUP_S)
    wait_idle(watched[name])
    first = _sample(watched, redis_url, upstream)
    seconds = RUN_S + 2 * EDGE_S
    process = wrk_start(wrk, url, path, level, seconds, {**env, "PEERS_TAG": f"m{secrets.token_hex(3)}"})
    time.sleep(EDGE_S)
    before = _sample(watched, redis_url, upstream)
    time.sleep(RUN_S)
    after = _sample(watched, redis_url, upstream)
    measured = wrk_result(process, seconds)
    wait_idle(watched[name])
    last = _sample(watched, redis_url, upstream)
    turns = after["calls"] - before["calls"]
    replies = measured["requests"]
    errors = {kind: count for kind, count in measured["errors"].items() if count}
    lat = measured["latency_us"]
    cell = {"target": name, "connections": level,
            "window": {"seconds": round(after["at"] - before["at"], 3), "turns": int(turns)},
            "req_per_s": round(turns / (after["at"] - before["at"]), 1),
            "cpu_ms_per_turn": round((after[name] - before[name]) / turns, 3),
            "redis_cpu_ms_per_turn": round((after["redis"] - before["redis"]) / turns, 3),
            "others_cpu_ms_in_window": {who: round(after[who] - before[who], 1)
                                        for who in watched if who != name},
            "wrk": {"replies": replies, "seconds": round(measured["duration_us"] / 1e6, 2),
                    "req_per_s": round(replies / (measured["duration_us"] / 1e6), 1), "errors": errors},
            "p50_ms": round(lat["p50"] / 1000, 2), "p90_ms": round(lat["p90"] / 1000, 2),
            "p99_ms": round(lat["p99"] / 1000, 2), "max_ms": round(lat["max"] / 1000, 2),
            "upstream_calls_of_the_run": int(last["calls"] - first["calls"])}
    # each reply is one upstream call; the turns wrk left unanswered at its end add at most
    # one call per connection
    cell["every_reply_reached_upstream"] = 0 <= cell["upstream_calls_of_the_run"] - replies <= level
    print(f"  {level:>2} connections {LABELS[name]:>11}: {cell['req_per_s']:7.1f} req/s, "
          f"{cell['cpu_ms_per_turn']:6.3f} ms CPU per turn, p50 {cell['p50_ms']} ms, p99 {cell['p99_ms']} ms"
          + (f", errors {errors}" if errors else "")
          + ("" if cell["every_reply_reached_upstream"] else
             f", upstream calls {cell['upstream_calls_of_the_run']} for {replies} replies"), flush=True)
    return cell


def _goals(cells: dict[str, dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    b, lite = cells["server_b"], cells["litellm"]
    cpu = [b[level]["cpu_ms_per_turn"] for level in LEVELS]
    times = [lite[level]["cpu_ms_per_turn"] / b[level]["cpu_ms_per_turn"] for level in LEVELS]
    at1 = b[1]
    return [
        {"goal": f"Server B <= {GOAL_CPU_MS} ms CPU per text turn (every connection count)",
         "measured": ", ".join(f"{value:.2f}" for value in cpu) + " ms at " + "/".join(map(str, LEVELS)),
         "met": max(cpu) <= GOAL_CPU_MS},
        {"goal": f"Server B's CPU per turn >= {GOAL_TIMES_LITELLM:g}x better than LiteLLM's",
         "measured": ", ".join(f"{value:.2f}x" for value in times) + " at " + "/".join(map(str, LEVELS)),
         "met": min(times) >= GOAL_TIMES_LITELLM},
        {"goal": f"Server B's throughput at {LEVELS[-1]} connections >= at 1",
         "measured": f"{b[LEVELS[-1]]['req_per_s']} vs {at1['req_per_s']} req/s",
         "met": b[LEVELS[-1]]["req_per_s"] >= at1["req_per_s"]},
        {"goal": f"Server B's p99 <= {GOAL_P99_OVER_P50:g}x p50 at 1 connection",
         "measured": f"{at1['p99_ms']} / {at1['p50_ms']} ms = {at1['p99_ms'] / at1['p50_ms']:.1f}x",
         "met": at1["p99_ms"] <= GOAL_P99_OVER_P50 * at1["p50_ms"]},
    ]


def _wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    return (done.stdout + done.stderr).splitlines()[0].split(" Copyright")[0].strip()


def run() -> dict[str, Any]:
    _check_machine()
    wrk = ensure_wrk()
    executable, version = litellm_command()
    started = time.monotonic()
    load = {"start": [round(x, 2) for x in os.getloadavg()]}
    cookie_secret, master_key = secrets.token_hex(32), f"sk-bench-{secrets.token_hex(16)}"
    cells: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in TARGETS}
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="peers-")))
        redis_url = stack.enter_context(private_redis())
        pin(redis_pid(redis_url), LOAD_CORE)
        upstream = stack.enter_context(stub(folder))
        b = stack.enter_context(server_b(folder, redis_url, upstream.base_url, cookie_secret))
        lite = stack.enter_context(litellm(folder, executable, upstream.base_url, master_key))
        print(f"  ready: Server B in {b.ready_s:.1f} s, LiteLLM {version} in {lite.ready_s:.1f} s",
              flush=True)
        template_b, template_openai = folder / "server_b.json", folder / "openai.json"
        template_b.write_text(json.dumps(server_b_body(), ensure_ascii=False))
        template_openai.write_text(json.dumps(openai_body(), ensure_ascii=False))
        auth = f"Bearer {master_key}"
        check_replies({
            "direct": (upstream.base_url, "/v1/chat/completions", {}, openai_body()),
            "server_b": (b.base_url, "/api/chat", {"Cookie": f"{COOKIE_NAME}={_cookie(cookie_secret)}"},
                         server_b_body()),
            "litellm": (lite.base_url, "/chat/completions", {"Authorization": auth}, openai_body())})
        watched = {"direct": upstream.pid, "server_b": b.pid, "litellm": lite.pid}
        for round_, level in enumerate(LEVELS):
            pool = folder / f"pool-{level}.tsv"
            write_pool(pool, cookie_secret, level)
            plans = {
                "direct": (upstream.base_url, "/v1/chat/completions",
                           {"PEERS_TEMPLATE": str(template_openai)}),
                "server_b": (b.base_url, "/api/chat",
                             {"PEERS_TEMPLATE": str(template_b), "PEERS_POOL": str(pool)}),
                "litellm": (lite.base_url, "/chat/completions",
                            {"PEERS_TEMPLATE": str(template_openai), "PEERS_AUTH": auth})}
            # Server B and LiteLLM take turns going first, so the machine's drift hits both alike
            for name in TARGETS if round_ % 2 == 0 else ("direct", "litellm", "server_b"):
                base, path, env = plans[name]
                if name == "direct":
                    pin(upstream.pid, PROXY_CORE)
                try:
                    cells[name][level] = _cell(wrk, name, base + path, path,
                                               level, env, watched, redis_url, upstream.base_url)
                finally:
                    if name == "direct":
                        pin(upstream.pid, LOAD_CORE)
        load["end"] = [round(x, 2) for x in os.getloadavg()]
        ready = {"server_b_s": round(b.ready_s, 1), "litellm_s": round(lite.ready_s, 1)}
    ratios = {level: {
        "cpu_server_b_over_litellm": round(cells["server_b"][level]["cpu_ms_per_turn"]
                                           / cells["litellm"][level]["cpu_ms_per_turn"], 3),
        "req_per_s_server_b_over_litellm": round(cells["server_b"][level]["req_per_s"]
                                                 / cells["litellm"][level]["req_per_s"], 2),
        "p50_server_b_over_litellm": round(cells["server_b"][level]["p50_ms"]
                                           / cells["litellm"][level]["p50_ms"], 2),
        "p99_server_b_over_litellm": round(cells["server_b"][level]["p99_ms"]
                                           / cells["litellm"][level]["p99_ms"], 2)} for level in LEVELS}
    result: dict[str, Any] = {
        "setup": {
            "litellm_version": version,
            "litellm": f"litellm[proxy]=={version} from PyPI in .venv-litellm, `litellm --config "
                       "--num_workers 1`: no database, no callbacks, a master key, uvicorn's access "
                       "log (its default) to /dev/null",
            "server_b": "python -m local_runner (one process, uvicorn), sign-in off, 200 anonymous users "
                        "with a signed cookie each, its request log line (default) to /dev/null, metrics "
                        "on, its log (an httpx INFO line per upstream call) to a file",
            "upstream": "bench/stub_llm.py (instant, canned reply), one uvicorn process",
            "cores": {"proxy": PROXY_CORE, "wrk, stub, redis": LOAD_CORE,
                      "direct row": f"the stub moved to core {PROXY_CORE} for its cells"},
            "wrk": f"{_wrk_version(wrk)}, 1 thread, --timeout 30s, bench/peers_wrk.lua",
            "levels": list(LEVELS), "warmup_s": WARMUP_S, "run_s": RUN_S, "sessions": SESSIONS,
            "server_b_request": "POST /api/chat {session_id, persona, max_tokens, tts_enabled: false, "
                                "messages: [the new line with a counter]}",
            "openai_request": f"POST /chat/completions: system persona ({len(PERSONA * 6)} chars), "
                              f"{HISTORY_EXCHANGES} earlier exchanges, the new line with a counter",
            "startup": ready,
            "load_average": load,
            "code": _code_version()},
        "cells": {name: {str(level): cell for level, cell in by_level.items()}
                  for name, by_level in cells.items()},
        "ratios": {str(level): value for level, value in ratios.items()},
        "goals": _goals(cells),
        "run_s": round(time.monotonic() - started, 1),
    }
    save("peers", result)
    table = markdown(result)
    (RESULTS / "peers.md").write_text(table)
    _paste_into_docs(table)
    print(table)
    return result


def _cookie(secret: str, client_id: str = "peers-check") -> str:
    from roleplay.web.anonymous_client import signed_cookie

    return signed_cookie(secret.encode(), client_id)


def _code_version() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", "layers", "functions",
                                  "local_runner"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (f" with uncommitted changes to {len(changed)} files of Server B" if changed else "")


def markdown(result: dict[str, Any]) -> str:
    m, setup = result.get("machine") or machine(), result["setup"]
    when = str(result.get("when", time.strftime("%Y-%m-%d")))
    load, ready = setup["load_average"], setup["startup"]
    cells = [cell for by_level in result["cells"].values() for cell in by_level.values()]
    unreached = [f"{LABELS[c['target']]} at {c['connections']}" for c in cells
                 if not c["every_reply_reached_upstream"]]
    errors = [f"{LABELS[c['target']]} at {c['connections']}: {c['wrk']['errors']}" for c in cells
              if c["wrk"]["errors"]]
    lines = [
        f"Measured {when[:10]} on {m['cpus']} cores ({m['cpu_model']}), Python {m['python']}, Linux "
        f"{m['kernel']}, code {setup['code']}, by `make bench BENCH=peers`: LiteLLM "
        f"{setup['litellm_version']} from PyPI; {setup['wrk']}; per cell {setup['warmup_s']} s of "
        f"warm-up, then {setup['run_s']} s measured. Load average {load['start'][0]} at the start, "
        f"{load['end'][0]} at the end"
        f"{' (other work shared the cores: compare within this run)' if load['start'][0] > 1 else ''}. "
        f"Ready after start: Server B {ready['server_b_s']} s, LiteLLM {ready['litellm_s']} s.", "",
        "| connections | | req/s | CPU ms per turn | p50 ms | p99 ms |", "|---|---|---|---|---|---|"]
    for level in map(str, setup["levels"]):
        for name in TARGETS:
            c = result["cells"][name][level]
            redis = f" (+ Redis {c['redis_cpu_ms_per_turn']:.2f})" if name == "server_b" else ""
            lines.append(f"| {level} | {LABELS[name]} | {c['req_per_s']:.0f} | "
                         f"{c['cpu_ms_per_turn']:.2f}{redis} | {c['p50_ms']:g} | {c['p99_ms']:g} |")
        r = result["ratios"][level]
        lines.append(f"| {level} | **Server B / LiteLLM** | {r['req_per_s_server_b_over_litellm']:.2f} | "
                     f"**{r['cpu_server_b_over_litellm']:.2f}** | {r['p50_server_b_over_litellm']:.2f} | "
                     f"{r['p99_server_b_over_litellm']:.2f} |")
    lines += ["", "Every reply reached the upstream (its calls over each run were the replies plus at "
              "most the turns in flight when wrk stopped)"
              + (f", except: {'; '.join(unreached)}" if unreached else "")
              + ". " + (f"Errors: {'; '.join(errors)}." if errors else "No errors.")]
    lines += ["", "| goal (shown here, worked on elsewhere) | measured | met |", "|---|---|---|"]
    lines += [f"| {g['goal']} | {g['measured']} | {'yes' if g['met'] else '**no**'} |"
              for g in result["goals"]]
    return "\n".join(lines) + "\n"


def _paste_into_docs(table: str) -> None:
    text = PERFORMANCE_DOC.read_text()
    start, end = text.find(MARKERS[0]), text.find(MARKERS[1])
    if 0 <= start < end:
        PERFORMANCE_DOC.write_text(text[:start + len(MARKERS[0])] + "\n" + table + text[end:])
    else:
        print(f"peers: no {MARKERS[0]} ... {MARKERS[1]} in {PERFORMANCE_DOC}; the table is in "
              f"{RESULTS / 'peers.md'}")


if __name__ == "__main__":
    run()
