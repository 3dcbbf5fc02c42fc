"""The service layer: one module per capability, shared by the API, the CLI and workers."""
