"""The ground floor: settings, errors, identity, the Redis client and its key names, HTTP pooling,
token counting and metrics. Imports nothing else of the layer."""
