"""Function handlers: one Lambda each, importable locally as `functions.<name>.app`."""
