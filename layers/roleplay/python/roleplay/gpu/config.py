"""The GPU modes configuration (`GPU_MODES`): services, how each is loaded and released,
and which services each mode keeps resident.

`GPU_MODES` is a path to a YAML or JSON file, or the JSON itself. Unset, the strategy is
`coresident`: every service stays loaded and nothing ever switches.

    strategy: switching
    services:
      llm:
        load:    [{action: vllm_wake, url: "http://server-a:8000"}]
        release: [{action: vllm_sleep, url: "http://server-a:8000", level: 1}]
      tts:
        load:
          - {action: http, method: POST, url: "http://server-a:9000/gpt-sovits/start"}
          - {action: gpt_sovits_weights, url: "http://server-a:9880",
             gpt_weights: "/models/voice.ckpt", sovits_weights: "/models/voice.pth"}
        release: [{action: http, method: POST, url: "http://server-a:9000/gpt-sovits/stop"}]
    modes:
      chat: [llm]
      tts: [tts]

Server B's own requests need the services `llm` (chat turns, summaries) and `tts`
(GPT-SoVITS synthesis); other services (3D, Stable Diffusion) only take part in modes.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from roleplay.core.settings import ConfigurationError, get_settings

ServiceName = Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,32}$")]


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VllmSleep(_Action):
    """vLLM sleep mode (`--enable-sleep-mode`, `VLLM_SERVER_DEV_MODE=1`): `POST /sleep`."""

    action: Literal["vllm_sleep"]
    url: str
    level: Literal[1, 2] = 1


class VllmWake(_Action):
    """`POST /wake_up`; the weights come back from CPU RAM (level 1) in seconds."""

    action: Literal["vllm_wake"]
    url: str


class GptSovitsWeights(_Action):
    """api_v2's `GET /set_gpt_weights` and `/set_sovits_weights`: loads a weight pair."""

    action: Literal["gpt_sovits_weights"]
    url: str
    gpt_weights: str | None = None
    sovits_weights: str | None = None


class HttpHook(_Action):
    """Anything else (3D, Stable Diffusion, a process manager on Server A)."""

    action: Literal["http"]
    method: Literal["GET", "POST", "PUT", "DELETE"] = "POST"
    url: str
    expect: int = 200
    body: dict[str, object] | None = None


Action = Annotated[VllmSleep | VllmWake | GptSovitsWeights | HttpHook, Field(discriminator="action")]


class ServiceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    load: list[Action] = Field(default_factory=list)
    release: list[Action] = Field(default_factory=list)


class GpuModes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: Literal["coresident", "switching"] = "coresident"
    services: dict[ServiceName, ServiceSpec] = Field(default_factory=dict)
    modes: dict[ServiceName, list[ServiceName]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _modes_name_known_services(self) -> GpuModes:
        for mode, services in self.modes.items():
            unknown = [s for s in services if s not in self.services]
            if unknown:
                raise ValueError(f"mode {mode!r} names unknown services {unknown}")
        if self.strategy == "switching" and not self.modes:
            raise ValueError("strategy switching needs at least one mode")
        return self

    def modes_with(self, service: str) -> list[str]:
        """The modes that keep `service` resident, in configuration order (the first is
        the one a switch goes to)."""
        return [mode for mode, services in self.modes.items() if service in services]

    def switches(self, service: str) -> bool:
        """Whether requests for `service` take part in switching at all."""
        return self.strategy == "switching" and bool(self.modes_with(service))


COEXISTING = GpuModes()


def parse_gpu_modes(value: str | None) -> GpuModes:
    """`GPU_MODES` as a path or inline JSON; ConfigurationError names what is wrong."""
    if not value or not value.strip():
        return COEXISTING
    text = value.strip()
    import yaml

    try:
        if text.startswith("{"):
            raw: object = json.loads(text)
        else:
            raw = yaml.safe_load(Path(text).read_text(encoding="utf-8"))
        return GpuModes.model_validate(raw)
    except (OSError, ValueError, ValidationError, yaml.YAMLError) as error:
        raise ConfigurationError(f"invalid environment: GPU_MODES={value!r}: {error}") from None


@lru_cache(maxsize=4)
def _cached(value: str | None) -> GpuModes:
    return parse_gpu_modes(value)


def gpu_modes() -> GpuModes:
    return _cached(get_settings().gpu_modes)
