"""The registry client: talking to image registries over the Registry HTTP API v2."""
