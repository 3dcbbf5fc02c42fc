"""The web console (templates and static files)."""
