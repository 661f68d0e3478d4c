"""/api/chat/models against vLLM's and Ollama's documented answers, and their failures."""

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.testclient import TestClient

from tests.support.upstream_server import closed_port_url, serve, silent_socket

VLLM_MODELS = {
    "object": "list",
    "data": [{"id": "gemma-3-27b-it", "object": "model", "created": 1, "owned_by": "vllm",
              "root": "/models/gemma-3-27b-it", "parent": None, "max_model_len": 32768}],
}
OLLAMA_TAGS = {
    "models": [{"name": "gemma3:27b", "model": "gemma3:27b",
                "modified_at": "2025-10-03T23:34:03.409490317-07:00", "size": 17396936941,
                "digest": "a2af6cc3eb7f", "details": {"format": "gguf", "family": "gemma3",
                                                      "families": ["gemma3"],
                                                      "parameter_size": "27.4B",
                                                      "quantization_level": "Q4_K_M"}}],
}


def _upstream() -> FastAPI:
    app = FastAPI()
    app.get("/v1/models")(lambda: VLLM_MODELS)
    app.get("/api/tags")(lambda: OLLAMA_TAGS)
    return app


def test_vllm_models_are_listed_with_metadata(settings_env, client: TestClient) -> None:
    with serve(_upstream()) as url:
        settings_env(LLM_BASE_URL=url + "/v1")
        body = client.get("/api/chat/models").json()
    assert body["success"] is True
    data = body["data"]
    assert data["service"] == "vllm"
    assert data["default_model"] == "gemma-3-27b-it"
    [model] = data["models"]
    assert model["id"] == "gemma-3-27b-it"
    assert model["context_length"] == 32768
    assert model["multimodal"] is True


def test_ollama_models_are_listed(settings_env, client: TestClient) -> None:
    with serve(_upstream()) as url:
        settings_env(LLM_BASE_URL=url, LLM_SERVICE="ollama",
                     MODEL_METADATA='{"gemma3:27b": {"context_length": 131072, "multimodal": true}}')
        data = client.get("/api/chat/models").json()["data"]
    assert data["service"] == "ollama"
    [model] = data["models"]
    assert model["id"] == "gemma3:27b"
    assert model["context_length"] == 131072
    assert model["multimodal"] is True
    assert model["details"]["parameter_size"] == "27.4B"


def test_models_upstream_down_is_a_502(settings_env, client: TestClient) -> None:
    settings_env(LLM_BASE_URL=closed_port_url())
    response = client.get("/api/chat/models")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"


def test_models_upstream_hanging_is_a_504(settings_env, client: TestClient) -> None:
    with silent_socket() as url:
        settings_env(LLM_BASE_URL=url, LLM_READ_TIMEOUT_S="0.3")
        response = client.get("/api/chat/models")
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_models_upstream_error_is_a_502_with_its_message(settings_env, client: TestClient) -> None:
    app = FastAPI()
    app.get("/v1/models")(lambda: JSONResponse({"object": "error", "message": "engine dead"}, 500))
    with serve(app) as url:
        settings_env(LLM_BASE_URL=url)
        response = client.get("/api/chat/models")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert "engine dead" in response.json()["error"]["message"]


def test_models_upstream_garbage_is_a_502(settings_env, client: TestClient) -> None:
    app = FastAPI()
    app.get("/v1/models")(lambda: PlainTextResponse("<html>proxy error</html>"))
    with serve(app) as url:
        settings_env(LLM_BASE_URL=url)
        response = client.get("/api/chat/models")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
