"""template.yaml deploys what `sam build` built, exposes nothing by accident, and stays
easy to extend: every artifact built by infra/sam/Makefile, speech only where it speaks,
the cache's engine a parameter and the functions told the cache is a cluster."""

from __future__ import annotations

import json
import re
from typing import Any

from infra.sam_build import ROOT, SPEAKING_FUNCTIONS
from roleplay.core.settings import Settings
from roleplay.sessions.cold_store import S3ColdStore
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


# --- conversations that last: the cold store and its schedule (issue 31) ---------------

SESSION_FUNCTIONS = {"ChatFunction", "ChatStreamFunction", "OpenAIFunction", "SummarizerFunction"}
"""The functions that read or write conversations (the summarizer archives them)."""


def test_the_conversation_bucket_is_private_encrypted_and_outlives_the_stack() -> None:
    bucket = load_template()["Resources"]["ConversationBucket"]
    assert bucket["Type"] == "AWS::S3::Bucket"
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"
    props = bucket["Properties"]
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True}


def test_cold_conversations_expire_after_the_retention_and_never_when_it_is_zero() -> None:
    template = load_template()
    retention = template["Parameters"]["ConversationRetentionDays"]
    assert retention["Type"] == "Number" and retention["Default"] == 90
    assert retention["MinValue"] == 0 and retention["MaxValue"] == 36_500
    assert Settings.model_fields["conversation_retention_days"].default == retention["Default"]
    assert template["Conditions"]["ConversationsExpire"] == [["ConversationRetentionDays", "0"]]
    lifecycle = template["Resources"]["ConversationBucket"]["Properties"]["LifecycleConfiguration"]
    condition, rules, otherwise = lifecycle
    assert condition == "ConversationsExpire" and otherwise == "AWS::NoValue"
    assert rules == {"Rules": [{"Id": "ExpireColdConversations", "Status": "Enabled",
                                "Prefix": "conversations/",
                                "ExpirationInDays": "ConversationRetentionDays"}]}
    assert S3ColdStore.prefix == "conversations/"


def test_every_function_that_keeps_conversations_reaches_the_bucket_and_knows_the_clocks() -> None:
    template = load_template()
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["CONVERSATION_BUCKET"] == "ConversationBucket"
    assert env["CONVERSATION_RETENTION_DAYS"] == "ConversationRetentionDays"
    assert env["SESSION_HOT_TTL_S"] == "SessionHotTtlSeconds"
    # The parameter keeps its name (deploys pass it); the variable is the cap's clock.
    assert env["ACTIVE_TTL_S"] == "SessionTtlSeconds" and "SESSION_TTL_S" not in env
    for name in ("CONVERSATION_BUCKET", "CONVERSATION_RETENTION_DAYS", "SESSION_HOT_TTL_S",
                 "ACTIVE_TTL_S"):
        assert name.lower() in Settings.model_fields, name
    hot = template["Parameters"]["SessionHotTtlSeconds"]
    assert hot["Default"] == Settings.model_fields["session_hot_ttl_s"].default
    crud = {"S3CrudPolicy": {"BucketName": "ConversationBucket"}}
    granted = {name for name, r in _resources("Function").items()
               if crud in r["Properties"].get("Policies", [])}
    assert granted == SESSION_FUNCTIONS


def test_the_summarizer_archives_idle_conversations_every_15_minutes() -> None:
    events = _resources("Function")["SummarizerFunction"]["Properties"]["Events"]
    schedules = [e["Properties"] for e in events.values() if e["Type"] == "Schedule"]
    assert len(schedules) == 1
    assert schedules[0]["Schedule"] == "rate(15 minutes)"
    assert json.loads(schedules[0]["Input"]) == {"kind": "archive"}
    assert not [e for e in events.values() if e["Type"] == "HttpApi"], "never an HTTP endpoint"
