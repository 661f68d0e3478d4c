"""One GPU, several models: which of Server A's models are resident, shared by every instance.

The design document (4.3.2) runs Gemma 3 27B (13-15 GB), GPT-SoVITS (3-4 GB), 3D
generation and Stable Diffusion on one 24 GB card. By default (`coresident`) nothing
switches: the LLM and speech both stay loaded, and `gpu_lease` costs nothing. With
`GPU_MODES` set to a `switching` configuration, a request that needs a service which
is not resident waits for the other mode's requests to drain, the coordinator swaps
the models, and the request proceeds (`roleplay.gpu.coordinator`).

Layering: this package knows only Redis, settings and HTTP; the LLM and speech
clients call `gpu_lease` around each upstream call, never the other way round.
"""
