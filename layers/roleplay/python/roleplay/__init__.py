"""The shared layer of Server B: the domain every function handler stands on.

Modules are imported on demand by the handlers so a Lambda cold start pays only for
what its endpoint uses.
"""
