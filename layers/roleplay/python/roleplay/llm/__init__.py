"""Server A's LLM: the HTTP client for vLLM (OpenAI-compatible) or Ollama, the models it serves,
their context limits, and exact prompt counting."""
