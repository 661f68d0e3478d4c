"""Issue 21: what switching the GPU between the LLM and speech adds to a chat + speech turn.

A chat turn in `realtime` TTS mode (the reply, then its audio) against Server A stand-ins
on one 24 GB card (tests/support/gpu_standins.py), twice: `coresident` (vLLM at
--gpu-memory-utilization 0.75, 18 GB, beside GPT-SoVITS's 4 GB: nothing switches) and
`switching` (vLLM at 0.9, 21.6 GB: GPT-SoVITS fits only while vLLM sleeps, so every turn
switches chat -> tts for its speech and the next turn tts -> chat). GPU_MIN_RESIDENCY_S
is 0 here, so the figure is the switches' own cost; under alternating load residency
adds waits of up to its value instead of more switches.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.harness import bench_env, save
from tests.support.gpu_standins import FakeGptSovits, FakeVllm, VramBudget, switching_config
from tests.support.server_process import server_b_process
from tests.support.upstream_server import serve

# Scaled from a 27B model on an RTX 3090: sleep level 1 copies ~14 GB of weights to pinned
# CPU memory and back (~1 s each way at PCIe 4.0 rates plus engine work); GPT-SoVITS's
# process starts and loads its weights in a couple of seconds.
DELAYS = {"vllm_sleep_s": 0.5, "vllm_wake_s": 1.0, "gpt_sovits_start_s": 1.5, "gpt_sovits_stop_s": 0.2,
          "llm_reply_s": 0.3, "synthesis_s": 0.3}
ROUNDS = 5


def _turns(switching: bool, rounds: int) -> dict[str, Any]:
    vram = VramBudget()
    vllm = FakeVllm(vram, gpu_memory_utilization=0.9 if switching else 0.75,
                    sleep_delay_s=DELAYS["vllm_sleep_s"], wake_delay_s=DELAYS["vllm_wake_s"],
                    reply_delay_s=DELAYS["llm_reply_s"])
    sovits = FakeGptSovits(vram, start_delay_s=DELAYS["gpt_sovits_start_s"],
                           stop_delay_s=DELAYS["gpt_sovits_stop_s"], synth_delay_s=DELAYS["synthesis_s"])
    vllm.start_awake()
    if not switching:
        sovits.start_running()
    with tempfile.TemporaryDirectory() as folder:
        voices = Path(folder) / "voices.json"
        voices.write_text(json.dumps({"voices": [{"id": "default", "name": "민지",
                                                  "ref_audio_path": "/srv/minji.wav"}]}))
        with bench_env("gpu") as (redis_url, prefix), serve(vllm.app()) as llm_url, \
                serve(sovits.app()) as tts_url:
            env = {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "LLM_BASE_URL": llm_url,
                   "DEFAULT_MODEL": vllm.model, "TTS_BASE_URL": tts_url, "VOICES_FILE": str(voices),
                   "AUDIO_DIR": str(Path(folder) / "audio"), "MAX_CONCURRENT_USERS": "1000",
                   "GPU_MIN_RESIDENCY_S": "0"}
            if switching:
                env["GPU_MODES"] = json.dumps(switching_config(llm_url, tts_url))
            with server_b_process(env) as (api, _), httpx.Client(base_url=api, timeout=120) as http:
                body = {"messages": [{"role": "user", "content": "Hi!"}], "tts_mode": "realtime"}
                http.post("/api/chat", json=body).raise_for_status()  # the first switch from unknown
                times = []
                for n in range(rounds):
                    started = time.perf_counter()
                    data = http.post("/api/chat", json={**body, "session_id": f"s{n}"}).json()["data"]
                    times.append(time.perf_counter() - started)
                    assert data["audio_url"], data
                gpu = http.get("/api/health").json()["data"].get("gpu") or {}
    return {"median_ms": round(statistics.median(times) * 1000, 1), "peak_vram_gb": vram.peak_gb,
            "refused_loads": len(vram.refused), "switches": gpu.get("switches", 0),
            "switch_ms_total": gpu.get("switch_ms_total", 0)}


def run(rounds: int = ROUNDS) -> dict[str, Any]:
    coresident, switching = _turns(False, rounds), _turns(True, rounds)
    result = {"setup": {"rounds": rounds, "stand_in_delays": DELAYS, "min_residency_s": 0},
              "coresident": coresident, "switching": switching,
              "added_ms_per_turn": round(switching["median_ms"] - coresident["median_ms"], 1)}
    save("gpu", result)
    return result


if __name__ == "__main__":
    run()
