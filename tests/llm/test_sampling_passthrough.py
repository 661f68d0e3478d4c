"""The optional sampling knobs (`llm.sampling.Sampling`: seed, the penalties, top_k, min_p,
logit_bias) as each upstream dialect sends them, and as the real test LLM takes them.

What each upstream takes, from its source:
- vLLM (vllm-project/vllm, vllm/entrypoints/openai/protocol.py ChatCompletionRequest, ec3b890):
  `seed`, `presence_penalty`, `frequency_penalty`, `logit_bias` (dict[str, float]), and
  among its sampling params `top_k`, `min_p`, `repetition_penalty`; unknown fields are
  logged and ignored (`OpenAIBaseModel`, extra="allow"). vllm/sampling_params.py
  `_verify_args` bounds them: penalties in [-2, 2], repetition_penalty > 0, top_k 0 (off),
  -1 or >= 1, min_p in [0, 1]; logit_bias keys must be integer token ids.
- Ollama (ollama/ollama, api/types.go Options, fb30760): `seed`, `top_k`, `min_p`,
  `repeat_penalty`, `presence_penalty`, `frequency_penalty` inside `options`; no logit
  bias; an unknown option is only logged (`Options.FromMap`).
- llama-cpp-python's server, the test LLM (abetlen/llama-cpp-python,
  llama_cpp/server/types.py CreateChatCompletionRequest, 0.3.x): `seed`,
  `presence_penalty`, `frequency_penalty` (-2..2), `top_k` (>= 0), `min_p` (0..1),
  `logit_bias` and `repeat_penalty`; a pydantic model with the default extra="ignore", so
  vLLM's `repetition_penalty` is ignored there, never refused.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from roleplay.chat.models import TurnOptions
from roleplay.llm.client import ChatMessage, CompletionRequest, UpstreamClient
from roleplay.llm.dialect import Ollama, OpenAICompatible
from roleplay.llm.sampling import Sampling

MESSAGES = [ChatMessage("user", "Hi")]
KNOBS = Sampling(temperature=0.9, max_tokens=64, top_p=0.95, stop=("\nUser:",), seed=42,
                 presence_penalty=0.5, frequency_penalty=-0.25, repetition_penalty=1.1,
                 top_k=40, min_p=0.05, logit_bias=((15, -100.0), (2024, 5.5)))
OLLAMA = Ollama(keep_alive="30m", safety_margin=0.05)


def test_vllm_gets_every_knob_the_caller_set_by_its_own_name() -> None:
    request = CompletionRequest(model="m", messages=MESSAGES, sampling=KNOBS)
    assert OpenAICompatible().payload(request, True) == {
        "model": "m", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.9,
        "max_tokens": 64, "stream": True, "top_p": 0.95, "stop": ["\nUser:"], "seed": 42,
        "presence_penalty": 0.5, "frequency_penalty": -0.25, "repetition_penalty": 1.1,
        "top_k": 40, "min_p": 0.05, "logit_bias": {"15": -100.0, "2024": 5.5},
        "stream_options": {"include_usage": True}}


def test_ollama_gets_the_knobs_in_options_by_its_names_and_no_logit_bias() -> None:
    request = CompletionRequest(model="m", messages=MESSAGES, sampling=KNOBS, context_tokens=2048)
    payload = OLLAMA.payload(request, False)
    assert payload["options"] == {
        "temperature": 0.9, "num_predict": 64, "num_ctx": 2048, "top_p": 0.95,
        "stop": ["\nUser:"], "seed": 42, "presence_penalty": 0.5, "frequency_penalty": -0.25,
        "repeat_penalty": 1.1, "top_k": 40, "min_p": 0.05}
    assert "logit_bias" not in json.dumps(payload)


def test_knobs_left_unset_leave_both_payloads_byte_for_byte_as_before() -> None:
    """None means "not sent", so a turn that sets no new knob sends what it always sent."""
    request = CompletionRequest(model="m", messages=MESSAGES, sampling=Sampling(top_p=0.9))
    assert json.dumps(OpenAICompatible().payload(request, False)) == (
        '{"model": "m", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.7, '
        '"max_tokens": 512, "stream": false, "top_p": 0.9}')
    assert json.dumps(OLLAMA.payload(request, False)["options"]) == (
        '{"temperature": 0.7, "num_predict": 512, "top_p": 0.9}')


def test_a_knob_set_to_its_off_value_is_still_sent() -> None:
    """0 is a choice (top_k off, no penalty), not an absence: the upstream's own default
    (vLLM's comes from the model's generation config, Gemma's top_k is 64) must not apply."""
    sampling = Sampling(top_k=0, presence_penalty=0.0, seed=0)
    payload = OpenAICompatible().payload(CompletionRequest("m", MESSAGES, sampling), False)
    assert (payload["top_k"], payload["presence_penalty"], payload["seed"]) == (0, 0.0, 0)


def test_turn_options_carry_the_knobs_into_sampling() -> None:
    """`/api/chat` (and the OpenAI API's session turn, through it) declares the same knobs."""
    options = TurnOptions(temperature=0.9, max_tokens=64, top_p=0.95, stop=["\nUser:"],
                          seed=42, presence_penalty=0.5, frequency_penalty=-0.25,
                          repetition_penalty=1.1, top_k=40, min_p=0.05,
                          logit_bias={"15": -100, "2024": 5.5})
    assert options.sampling() == KNOBS
    assert TurnOptions().sampling() == Sampling(), "none set: none sent"


def test_clients_off_values_are_normalised() -> None:
    """-1 is "off" to older vLLM for top_k (llama-cpp-python refuses it: ge=0) and
    "random" for a seed (SillyTavern's default, Ollama's too)."""
    sampling = TurnOptions(top_k=-1, seed=-1).sampling()
    assert (sampling.top_k, sampling.seed) == (0, None)


@pytest.mark.parametrize("knobs", [
    {"presence_penalty": 2.5}, {"frequency_penalty": -3}, {"repetition_penalty": 0},
    {"repetition_penalty": 2.5}, {"top_k": -2}, {"top_k": 1.5}, {"top_k": 5000},
    {"min_p": 1.5}, {"min_p": -0.1}, {"seed": 2**64}, {"seed": "abc"},
    {"logit_bias": {"a token": 5}}, {"logit_bias": {"-3": 5}}, {"logit_bias": {"15": 101}},
    {"presence_penalty": float("nan")},
])
def test_a_knob_out_of_range_is_refused_before_any_upstream(knobs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TurnOptions(**knobs)


@pytest.mark.llm
def test_the_test_llm_takes_every_knob_and_honours_logit_bias(llm_server: Any) -> None:
    """llama-cpp-python's server, the suite's real LLM: a payload with every knob is a 200
    (vLLM's `repetition_penalty` ignored), and a logit bias of +100 on one token makes the
    model write it. (Its replies are not reproducible by seed across requests: its prompt
    cache changes the numbers, so that is not asserted.)"""
    client = UpstreamClient(OpenAICompatible(), llm_server.base_url)
    tokens = httpx.post(f"{llm_server.base_url}/extras/tokenize", timeout=30, json={
        "input": " banana", "model": llm_server.model_alias}).json()["tokens"]
    prompt = [ChatMessage("user", "Write one short sentence about the sea.")]

    def complete(sampling: Sampling) -> str:
        request = CompletionRequest(model=llm_server.model_alias, messages=prompt, sampling=sampling)
        return asyncio.run(client.complete(request)).content

    seeded = Sampling(temperature=1.5, max_tokens=12, top_p=0.95, seed=7, presence_penalty=0.3,
                      frequency_penalty=0.2, repetition_penalty=1.1, top_k=0, min_p=0.05,
                      logit_bias=((tokens[-1], -1.0),))
    assert complete(seeded).strip()
    biased = complete(Sampling(temperature=0.0, max_tokens=4, logit_bias=((tokens[-1], 100.0),)))
    assert "banana" in biased
