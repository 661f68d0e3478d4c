"""The speech engines, each imported on first use: GPT-SoVITS api_v2, eSpeak NG, and the
failover between them."""
