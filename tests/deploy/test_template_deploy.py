"""template.yaml deploys what `sam build` built, exposes nothing by accident, and stays
easy to extend: every artifact built by infra/sam/Makefile, speech only where it speaks,
the cache's engine a parameter and the functions told the cache is a cluster."""

from __future__ import annotations

import re
from typing import Any

from infra.sam_build import ROOT, SPEAKING_FUNCTIONS
from roleplay.core.settings import Settings
from tests.support.sam_template import load_template

MAKEFILE_BUILD = {"BuildMethod": "makefile", "ContextPath": "infra/sam"}


def _resources(kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in load_template()["Resources"].items()
            if r["Type"] == f"AWS::Serverless::{kind}"}


def test_every_function_and_layer_is_built_by_the_makefile() -> None:
    makefile = (ROOT / "infra" / "sam" / "Makefile").read_text()
    built = {**_resources("Function"), **_resources("LayerVersion")}
    assert {"RoleplayLayer", "SpeechLayer", "ChatFunction", "TtsFunction"} <= set(built)
    for name, resource in built.items():
        assert resource.get("Metadata") == MAKEFILE_BUILD, name
        assert name.endswith("Function") or f"build-{name}:" in makefile, name
    assert "build-%Function:" in makefile


def _speech_layer(resource: dict[str, Any]) -> str:
    """'always', 'when embedded' (the EmbeddedSpeech condition) or 'never'."""
    for entry in resource["Properties"].get("Layers", []):
        if entry == "SpeechLayer":
            return "always"
        if isinstance(entry, list) and entry[:2] == ["EmbeddedSpeech", "SpeechLayer"]:
            return "when embedded"
    return "never"


def test_speech_layer_goes_only_to_the_functions_that_speak() -> None:
    functions = _resources("Function")
    assert load_template()["Globals"]["Function"]["Layers"] == ["RoleplayLayer"]
    placed = {name: _speech_layer(r) for name, r in functions.items()}
    assert placed["TtsFunction"] == "always"
    assert placed["ChatFunction"] == placed["ChatStreamFunction"] == placed["OpenAIFunction"] == (
        "when embedded")
    assert {n for n, p in placed.items() if p == "never"} == {
        "HealthFunction", "CharactersFunction", "ModelsFunction", "SummarizerFunction",
        "VoicesFunction", "UsersFunction"}
    folders = {r["Properties"]["CodeUri"].rstrip("/").split("/")[-1]
               for n, r in functions.items() if placed[n] != "never"}
    assert folders == SPEAKING_FUNCTIONS
    assert load_template()["Conditions"]["EmbeddedSpeech"] == ["TtsBaseUrl", ""]


def test_streaming_function_url_cannot_be_deployed_without_sign_in() -> None:
    template = load_template()
    rule = template["Rules"]["StreamingNeedsSignIn"]
    assert rule["RuleCondition"] == ["EnableStreaming", "true"]
    assert rule["Assertions"][0]["Assert"] == [["JwtSecretArn", ""]]
    stream = template["Resources"]["ChatStreamFunction"]["Properties"]
    assert stream["Handler"] == "run.sh"
    run_sh = (ROOT / "functions" / "chat" / "run.sh").read_text()
    assert "app:signed_in_app" in run_sh


def test_cors_comes_from_one_parameter() -> None:
    template = load_template()
    assert template["Parameters"]["CorsAllowOrigins"]["Type"] == "CommaDelimitedList"
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["CORS_ALLOW_ORIGINS"] == [",", "CorsAllowOrigins"]
    api_cors = template["Resources"]["HttpApi"]["Properties"]["CorsConfiguration"]
    url_cors = template["Resources"]["ChatStreamFunction"]["Properties"]["FunctionUrlConfig"]["Cors"]
    for cors in (api_cors, url_cors):
        assert cors["AllowOrigins"] == ["HasCorsOrigins", "CorsAllowOrigins", "AWS::NoValue"]
        assert cors["AllowCredentials"] is True


def test_web_adapter_version_is_a_parameter_with_a_current_default() -> None:
    template = load_template()
    assert template["Parameters"]["WebAdapterLayerVersion"]["Default"] == 27
    layers = template["Resources"]["ChatStreamFunction"]["Properties"]["Layers"]
    arn = next(entry for entry in layers if isinstance(entry, list) and entry[0] == "DefaultWebAdapter")[1]
    assert re.search(r"LambdaAdapterLayerX86:\$\{WebAdapterLayerVersion\}$", arn)


def test_cache_engine_is_a_parameter_and_every_function_knows_the_cache_is_a_cluster() -> None:
    template = load_template()
    engine = template["Parameters"]["CacheEngine"]
    assert engine["AllowedValues"] == ["valkey", "redis"] and engine["Default"] == "valkey"
    cache = template["Resources"]["SessionCache"]
    assert cache["Type"] == "AWS::ElastiCache::ServerlessCache"
    assert cache["Properties"]["Engine"] == "CacheEngine"
    # ElastiCache Serverless: Valkey 7 or 8, Redis OSS only 7.
    assert template["Conditions"]["ValkeyCache"] == ["CacheEngine", "valkey"]
    assert cache["Properties"]["MajorEngineVersion"] == ["ValkeyCache", "8", "7"]
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["REDIS_URL"] == (
        "rediss://${SessionCache.Endpoint.Address}:${SessionCache.Endpoint.Port}/0")
    assert env["REDIS_CLUSTER"] == "on"
    assert "redis_cluster" in Settings.model_fields
    overridden = {name for name, r in _resources("Function").items()
                  if {"REDIS_URL", "REDIS_CLUSTER"} & set(
                      r["Properties"].get("Environment", {}).get("Variables", {}))}
    assert not overridden, overridden
