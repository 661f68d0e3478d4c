"""Gathers every benchmark's JSON into `latest.json`, a Markdown table (`latest.md`, also
pasted between the markers in docs/performance.md) and two plots, and judges each goal."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench import BENCHMARKS as NAMES
from bench.harness import RESULTS, ROOT, machine

PERFORMANCE_DOC = ROOT / "docs" / "performance.md"
MARKERS = ("<!-- bench:start -->", "<!-- bench:end -->")
SAME_WITHIN = 0.10
"""Two costs count as equal when they differ by at most 10% (or 0.5 ms, for tiny ones)."""


def _load() -> dict[str, Any]:
    found = {}
    for name in NAMES:
        path = RESULTS / f"{name}.json"
        if path.exists():
            found[name] = json.loads(path.read_text())
    return found


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= max(0.5, SAME_WITHIN * min(a, b))


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    judged: list[dict[str, Any]] = []
    if "overhead" in r:
        at20 = next(level for level in r["overhead"]["levels"] if level["users"] == 20)
        judged.append({"goal": "overhead at 20 users chatting <= 2 ms p50, <= 10 ms p99",
                       "measured": f"{at20['overhead_p50_ms']} ms p50, {at20['overhead_p99_ms']} ms p99",
                       "met": at20["overhead_p50_ms"] <= 2 and at20["overhead_p99_ms"] <= 10})
    if "context" in r:
        c = r["context"]
        early, late = c["server_cpu_ms_turn_10"]["median_ms"], c["server_cpu_ms_turn_1000"]["median_ms"]
        judged.append({"goal": "turn 1,000 costs what turn 10 does (server CPU, median, side by side)",
                       "measured": f"{early} ms (turn 10) vs {late} ms (turns 991-1010)",
                       "met": _same(early, late)})
        s = c["turns_that_scheduled_a_summary"]["median_ms"]
        b, n = c["turns_just_before_those_that_scheduled"]["median_ms"], c["turns_that_did_not"]["median_ms"]
        judged.append({"goal": "turns that trigger a summary are as fast as others (median latency)",
                       "measured": f"{s} ms vs {b} ms for the turn just before each (all others: {n} ms)",
                       "met": _same(s, b)})
    if "tts" in r:
        t = r["tts"]["time_to_first_audio_ms"]
        sentences = r["tts"]["setup"]["reply_sentences"]
        judged.append({"goal": f"first audio <= 0.3 of sequential ({sentences}-sentence reply)",
                       "measured": f"{t['sentence_pipelined_median']} ms vs "
                                   f"{t['whole_reply_then_synthesize_median']} ms = "
                                   f"{t['pipelined_as_fraction_of_whole']}",
                       "met": t["pipelined_as_fraction_of_whole"] <= 0.3})
        for mode, m in sorted(r["tts"].get("streaming_first_audio_ms", {}).items()):
            if mode == "mode_0":
                continue
            judged.append({"goal": f"streamed speech ({mode.replace('_', ' ')}): first audio <= 0.5 "
                                   "of sentence-pipelined",
                           "measured": f"{m['first_audio_event_median']} ms vs "
                                       f"{t['sentence_pipelined_median']} ms = "
                                       f"{m['as_fraction_of_pipelined']} (first piece's text at "
                                       f"{m.get('first_piece_text_median', m['first_sentence_text_median'])}"
                                       f" ms)",
                           "met": m["as_fraction_of_pipelined"] <= 0.5})
    if "cold_start" in r:
        functions = r["cold_start"]["functions"]
        slow = {name: f["cold_start_ms"] for name, f in functions.items() if f["cold_start_ms"] > 300}
        judged.append({"goal": "every handler's cold start <= 300 ms (sam build, bytecode)",
                       "measured": ", ".join(f"{name} {f['cold_start_ms']:.0f}"
                                             for name, f in sorted(functions.items())) + " ms",
                       "met": not slow})
    if "ops" in r:
        o = r["ops"]
        judged.append({"goal": "request log and metrics cost < 10% of a turn's CPU",
                       "measured": f"{o['cpu_ms_per_turn']['on']} ms on vs {o['cpu_ms_per_turn']['off']} ms "
                                   f"off (+{o['added_fraction'] * 100:.1f}%)",
                       "met": o["added_fraction"] < 0.10})
    if "cluster" in r:
        judged += _cluster_goals(r["cluster"])
    return judged


def _cluster_goals(c: dict[str, Any]) -> list[dict[str, Any]]:
    one, cluster, spread = c["single"], c["cluster"], c["spread"]
    shares = ", ".join(f"{node['share'] * 100:.1f}%" for node in spread["nodes"])
    return [
        {"goal": "Redis Cluster: at most 1 more Redis round trip per turn than one Redis",
         "measured": f"{cluster['round_trips_per_turn']:g} vs {one['round_trips_per_turn']:g} "
                     f"(+{c['extra_round_trips_per_turn']:g}; in sequence "
                     f"{cluster['sequential_round_trips_per_turn']:g} vs "
                     f"{one['sequential_round_trips_per_turn']:g})",
         "met": c["extra_round_trips_per_turn"] <= 1},
        {"goal": "Redis Cluster: Server B CPU per turn at most 10% above one Redis's",
         "measured": f"{cluster['cpu_ms_per_turn']} ms vs {one['cpu_ms_per_turn']} ms "
                     f"({c['cpu_change'] * 100:+.1f}%)",
         "met": c["cpu_change"] <= SAME_WITHIN},
        {"goal": f"Redis Cluster: no shard holds more than 45% of {spread['sessions']:,} sessions "
                 f"of {spread['users']} users",
         "measured": shares,
         "met": spread["max_share"] <= 0.45},
    ]


def _cold_start_table(cold: dict[str, Any]) -> list[str]:
    lines = ["", f"Cold start on the `sam build` output, Python 3.12, median of "
                 f"{cold['setup']['runs_per_function']} fresh processes (interpreter start "
                 f"{cold['interpreter_start_ms']} ms not included):", "",
             "| function | with bytecode | without bytecode | import / first invoke (with) | "
             "slowest imports (ms) |", "|---|---|---|---|---|"]
    for name, f in sorted(cold["functions"].items()):
        slowest = ", ".join(f"{module} {ms:.0f}" for module, ms in f.get("slowest_imports_ms", {}).items())
        without = f.get("cold_start_without_bytecode_ms", "-")
        lines.append(f"| {name} | {f['cold_start_ms']} ms | {without} ms | "
                     f"{f['import_ms']} / {f['first_invoke_ms']} ms | {slowest} |")
    if "floor" in cold:
        floor = cold["floor"]
        lines.append(f"| *floor: {floor['what']}* | {floor['cold_start_ms']} ms | | "
                     f"{floor['import_ms']} / {floor['first_invoke_ms']} ms | |")
    return lines


def _measured_on(r: dict[str, Any]) -> str:
    """Where and when the results were measured: each result file records its machine, and
    a rerun of one benchmark (`make bench BENCH=tts`) may come from another machine."""
    groups: dict[str, list[str]] = {}
    for name, result in r.items():
        m = result.get("machine") or machine()
        day = str(result.get("when", time.strftime("%Y-%m-%d")))[:10]
        where = (f"{day} on {m.get('cpus', '?')} cores ({m.get('cpu_model', 'unknown CPU')}), "
                 f"Python {m.get('python', '?')}")
        groups.setdefault(where, []).append(name)
    if len(groups) == 1:
        return f"Measured {next(iter(groups))}, by `make bench`."
    parts = [f"{', '.join(names)}: {where}" for where, names in groups.items()]
    return "Measured by `make bench` (machines differ; compare numbers within a benchmark): " + \
        "; ".join(parts) + "."


def markdown(r: dict[str, Any], judged: list[dict[str, Any]]) -> str:
    lines = [_measured_on(r), "", "| goal | measured | met |", "|---|---|---|"]
    lines += [f"| {g['goal']} | {g['measured']} | {'yes' if g['met'] else '**no**'} |" for g in judged]
    if "overhead" in r:
        lines += ["", "Chat turn through Server B vs the same request straight to an instant stub upstream "
                  "(one session per user):", "",
                  "| users | direct p50 / p99 | backend p50 / p99 | overhead p50 / p99 "
                  "| Server B CPU per turn |",
                  "|---|---|---|---|---|"]
        for load, levels in (("chatting", r["overhead"]["levels"]),
                             ("back to back", r["overhead"]["back_to_back"])):
            for level in levels:
                d, b = level["direct"], level["backend"]
                lines.append(f"| {level['users']} {load} | {d['median_ms']} / {d['p99_ms']} ms | "
                             f"{b['median_ms']} / {b['p99_ms']} ms | {level['overhead_p50_ms']} / "
                             f"{level['overhead_p99_ms']} ms | {level['server_b_cpu_ms_per_turn']} ms |")
    if "real_llm" in r:
        q = r["real_llm"]
        lines += ["", f"Real model ({q['setup']['model']}, {q['setup']['max_tokens']} tokens, "
                  "temperature 0), backend / direct at the median:", "",
                  "| | direct | backend | ratio |", "|---|---|---|---|"]
        for label, part in (("non-streamed, whole reply", q["non_streamed"]["total"]),
                            ("streamed, whole reply", q["streamed"]["total"]),
                            ("streamed, first token", q["streamed"]["first_token"])):
            lines.append(f"| {label} | {part['direct']['median_ms']} ms | "
                         f"{part['backend']['median_ms']} ms | {part['ratio_p50']} |")
    if "context" in r:
        c = r["context"]
        lines += ["", f"One session of {c['setup']['turns']} turns: {c['summaries_made']} summaries, "
                  f"{c['turns_with_dropped_messages']} turns dropped messages, largest prompt "
                  f"{c['largest_prompt_tokens']} tokens. Backend time (latency minus the stub's "
                  f"{c['setup']['reply_delay_ms']:g} ms) median: {c['backend_ms_turn_10']['median_ms']} ms "
                  f"at turn 10, {c['backend_ms_turn_1000']['median_ms']} ms at turns 991-1010. The prompt "
                  f"held {c['prompt_messages_at_turn_10']} messages at turn 10 and "
                  f"{c['prompt_messages_turns_991_1010'][0]}-{c['prompt_messages_turns_991_1010'][1]} at "
                  f"turns 991-1010; each message in the prompt costs Server B about "
                  f"{c['server_cpu_ms_per_prompt_message']} ms of CPU (least squares over turns 21-1010)."]
    if "limiter" in r:
        lim = r["limiter"]
        trips = lim["redis_round_trips_per_chat_turn"]
        lines += ["", f"Redis: {trips['median']} round trips per chat turn "
                  f"({trips['redis_commands_executed_per_turn']} commands executed, scripts' inner calls "
                  f"included); an admission takes {lim['admission_latency']['sequential']['median_ms']} ms "
                  f"median in {lim['admission_latency']['round_trips_per_admission']:g} round trip."]
    if "cluster" in r:
        c = r["cluster"]
        one, cluster, setup = c["single"], c["cluster"], c["setup"]
        lines += ["", f"Redis Cluster (issue 26): one runner on one Redis against one on a "
                  f"{setup['cluster_nodes']}-node cluster on loopback, {setup['blocks']} alternating "
                  f"blocks of {setup['turns_per_block']} text turns over {setup['sessions']} sessions "
                  f"of {setup['users']} users (`python -m bench cluster`). Per turn, cluster vs one "
                  f"Redis: {cluster['round_trips_per_turn']:g} vs {one['round_trips_per_turn']:g} "
                  f"round trips (writes of the runner's connections; "
                  f"{cluster['sequential_round_trips_per_turn']:g} vs "
                  f"{one['sequential_round_trips_per_turn']:g} waited for in sequence; the "
                  f"persona and session read is one write to each of two nodes in "
                  f"{c['turns_with_user_and_session_on_two_nodes'] * 100:.0f}% of turns), "
                  f"{cluster['commands_sent_per_turn']:g} vs {one['commands_sent_per_turn']:g} "
                  f"commands sent, {cluster['redis_commands_executed_per_turn']:g} vs "
                  f"{one['redis_commands_executed_per_turn']:g} executed; Server B CPU "
                  f"{cluster['cpu_ms_per_turn']} vs {one['cpu_ms_per_turn']} ms; latency "
                  f"{cluster['latency']['median_ms']} vs {one['latency']['median_ms']} ms median."]
    if "gpu" in r:
        g, d = r["gpu"], r["gpu"]["setup"]["stand_in_delays"]
        lines += ["", f"One GPU (issue 21): a chat + speech turn (`realtime`) takes "
                  f"{g['coresident']['median_ms']} ms coresident and {g['switching']['median_ms']} ms when "
                  f"the GPU switches chat -> tts and back ({g['added_ms_per_turn']} ms added; "
                  f"{g['switching']['switches']} switches, "
                  f"peak {g['switching']['peak_vram_gb']:g} GB of 24). "
                  f"Stand-in delays: vLLM sleep {d['vllm_sleep_s']:g} s, wake {d['vllm_wake_s']:g} s, "
                  f"GPT-SoVITS start {d['gpt_sovits_start_s']:g} s, stop {d['gpt_sovits_stop_s']:g} s, "
                  f"reply {d['llm_reply_s']:g} s, synthesis {d['synthesis_s']:g} s."]
    if "streaming_first_audio_ms" in r.get("tts", {}):
        t = r["tts"]
        lines += ["", "First audio of a streamed chat with speech (median; the text of the first piece "
                  "spoken is the floor, since speech cannot start before its words exist; mode 0 speaks "
                  "the whole first sentence, modes 2-3 may start at a word boundary):", "",
                  "| reply | GPT-SoVITS mode | first sentence's text | first piece's text | "
                  "first audio event | first audio bytes | speech after text | vs mode 0 |",
                  "|---|---|---|---|---|---|---|---|"]
        for label, part in (("short first sentence", t["streaming_first_audio_ms"]),
                            ("long first sentence", t.get("long_first_sentence_ms", {}))):
            for mode, m in sorted(part.items()):
                piece = m.get("first_piece_text_median", m["first_sentence_text_median"])
                sentence = m["first_sentence_text_median"]
                sentence_cell = "after first audio" if sentence is None else f"{sentence} ms"
                lines.append(f"| {label} | {mode.split('_')[1]} | {sentence_cell} | "
                             f"{piece} ms | {m['first_audio_event_median']} ms | "
                             f"{m['first_audio_bytes_median']} ms | {m['speech_after_text_ms']} ms | "
                             f"{m['as_fraction_of_pipelined']} |")
    if "cold_start" in r:
        lines += _cold_start_table(r["cold_start"])
    lines += ["", "Plots: `bench/results/latency_vs_concurrency.png`, `bench/results/turn_cost.png`."]
    return "\n".join(lines) + "\n"


def plots(r: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "overhead" in r:
        figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
        for axis, (title, levels) in zip(axes, (("users chatting", r["overhead"]["levels"]),
                                                ("back to back", r["overhead"]["back_to_back"])),
                                         strict=True):
            users = [level["users"] for level in levels]
            for side, style in (("direct", "--"), ("backend", "-")):
                for key, marker in (("median_ms", "o"), ("p99_ms", "s")):
                    axis.plot(users, [level[side][key] for level in levels], style, marker=marker,
                              label=f"{side} {key.removesuffix('_ms').replace('median', 'p50')}")
            axis.set(xscale="log", yscale="log", xlabel="concurrent users", ylabel="latency (ms)",
                     title=f"Chat turn, {title}")
            axis.set_xticks(users, [str(u) for u in users])
            axis.set_xticks([], minor=True)
            axis.grid(True, which="both", alpha=0.3)
            axis.legend()
        figure.suptitle("Through Server B (solid) vs straight to the upstream (dashed)")
        figure.tight_layout()
        figure.savefig(RESULTS / "latency_vs_concurrency.png", dpi=110)
        plt.close(figure)
    if "context" in r:
        series = r["context"]["per_10_turns"]
        figure, axis = plt.subplots(figsize=(7, 4.5))
        turns = [point["turn"] for point in series]
        axis.plot(turns, [point["backend_ms"] for point in series], label="backend time per turn (ms)")
        axis.plot(turns, [point["server_cpu_ms"] for point in series], label="Server B CPU per turn (ms)")
        axis.set(xlabel="turn number (median of each 10 turns)", ylabel="ms", ylim=(0, None),
                 title="Per-turn cost over one 1,000-turn conversation")
        axis.grid(True, alpha=0.3)
        axis.legend()
        figure.tight_layout()
        figure.savefig(RESULTS / "turn_cost.png", dpi=110)
        plt.close(figure)


def _paste_into_docs(table: str) -> None:
    """Replaces what lies between the markers in docs/performance.md with the new table."""
    text = PERFORMANCE_DOC.read_text()
    start, end = text.find(MARKERS[0]), text.find(MARKERS[1])
    if 0 <= start < end:
        PERFORMANCE_DOC.write_text(text[:start + len(MARKERS[0])] + "\n" + table + text[end:])


def write() -> Path:
    results = _load()
    judged = goals(results)
    latest = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(), "goals": judged,
              "results": results}
    (RESULTS / "latest.json").write_text(json.dumps(latest, indent=2, ensure_ascii=False) + "\n")
    table = markdown(results, judged)
    (RESULTS / "latest.md").write_text(table)
    plots(results)
    _paste_into_docs(table)
    print(table)
    return RESULTS / "latest.md"


if __name__ == "__main__":
    write()
