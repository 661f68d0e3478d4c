"""How a reply is sampled: one light declaration shared by the request models and the
LLM client (a cold start that only validates a request imports no HTTP client).

`Sampling` is what a chat request asks of the upstream; the `Annotated` types below are
each optional knob's range, declared once for every request model that takes it
(`chat.models.TurnOptions`, `openai_compat.models.ChatCompletionRequest`), so a knob
out of range is the caller's 400 before any upstream sees it. The ranges are those vLLM
(`SamplingParams._verify_args`), llama-cpp-python's server (`server/types.py`) and
OpenAI document, so an accepted value is never an upstream's 400; clients' "off"
values are normalised here (`top_k` -1 is 0; a negative `seed` is no seed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, AliasChoices, BaseModel, Field, StringConstraints

Penalty = Annotated[float, Field(ge=-2, le=2)]
"""`presence_penalty`, `frequency_penalty`: OpenAI's and vLLM's range."""
RepetitionPenalty = Annotated[float, Field(gt=0, le=2)]
"""Multiplicative, 1 is off (vLLM's `repetition_penalty`, Ollama's `repeat_penalty`)."""
MinP = Annotated[float, Field(ge=0, le=1)]
TopK = Annotated[int, Field(ge=-1, le=1000), AfterValidator(lambda k: max(k, 0))]
"""0 is off; -1 (an older vLLM's "off") is taken as 0, which llama-cpp-python requires."""
Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1),
                 AfterValidator(lambda seed: seed if seed >= 0 else None)]
"""A 64-bit integer (vLLM's bound); a negative one (SillyTavern's and Ollama's -1) means
"random", which is no seed sent."""
TokenId = Annotated[str, StringConstraints(pattern=r"^\d{1,9}$")]
Bias = Annotated[float, Field(ge=-100, le=100)]
LogitBias = Annotated[dict[TokenId, Bias], Field(max_length=1024)]
"""OpenAI's `logit_bias`: token ids (in the upstream model's tokenizer) to -100..100."""


@dataclass(frozen=True)
class Sampling:
    """As every request model declares it (`chat.models.TurnOptions`): a new knob is added
    here, there and in each upstream dialect's payload. The knobs after `stop` are None
    (or empty) unless the caller set them, and then are not sent at all: the upstream's
    own default (vLLM's from the model's generation config) applies."""

    temperature: float = 0.7
    max_tokens: int = 512
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()
    """Token id and bias pairs; a tuple so that a `Sampling` stays immutable."""

    def chosen_knobs(self) -> dict[str, int | float]:
        """The optional numeric knobs the caller set, by their OpenAI (vLLM) names."""
        return {name: value for name in NUMERIC_KNOBS
                if (value := getattr(self, name)) is not None}


NUMERIC_KNOBS = ("seed", "presence_penalty", "frequency_penalty", "repetition_penalty",
                 "top_k", "min_p")
"""The optional knobs besides `logit_bias`, named alike in `Sampling` and `SamplingKnobs`."""


class SamplingKnobs(BaseModel):
    """The optional knobs a request may set, declared once for every request model that
    takes them (`chat.models.TurnOptions`, `openai_compat.models.ChatCompletionRequest`)."""

    seed: Seed | None = Field(default=None, description="The same seed and prompt give the "
                              "same reply where the upstream can; negative: random.")
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repetition_penalty: RepetitionPenalty | None = Field(
        default=None, validation_alias=AliasChoices("repetition_penalty", "repeat_penalty"),
        description="1 is off; llama.cpp's and Ollama's `repeat_penalty` is taken for it too "
        "(Open WebUI passes a model's parameters under their own names).")
    top_k: TopK | None = Field(default=None, description="0 (or -1) is off.")
    min_p: MinP | None = None
    logit_bias: LogitBias | None = Field(
        default=None, description="Token ids of the upstream model's tokenizer to -100..100; "
        "not sent to Ollama, which has none. SillyTavern always sends it, `{}` when empty.")

    def sampling_options(self) -> dict[str, Any]:
        """The knobs this request sets (an empty `logit_bias` is none), by the names every
        request model takes them; unset ones are left out, so the upstream's defaults apply."""
        chosen: dict[str, Any] = {name: value for name in NUMERIC_KNOBS
                                  if (value := getattr(self, name)) is not None}
        if self.logit_bias:
            chosen["logit_bias"] = self.logit_bias
        return chosen

    def sampling_with(self, *, temperature: float, max_tokens: int, top_p: float | None,
                      stop: tuple[str, ...]) -> Sampling:
        """`Sampling` of these knobs and the request's own temperature, length and stops."""
        knobs = self.sampling_options()
        bias = logit_bias_pairs(knobs.pop("logit_bias", None))
        return Sampling(temperature=temperature, max_tokens=max_tokens, top_p=top_p, stop=stop,
                        logit_bias=bias, **knobs)


def logit_bias_pairs(given: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    """A validated `LogitBias` as `Sampling.logit_bias` holds it."""
    return tuple((int(token), bias) for token, bias in (given or {}).items())
