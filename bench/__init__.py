"""Benchmarks of Server B (`make bench`); each scenario is `bench/<name>_bench.py`."""

BENCHMARKS = ("overhead", "real_llm", "context", "limiter", "tts", "cold_start", "gpu", "ops",
              "turn_path", "baseline", "cluster", "memory", "archive", "peers", "instructions")
