"""Command-line entry points (``sparse-train``)."""
