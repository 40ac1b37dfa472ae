"""Continual learning with DST: Avalanche plugins, per-task masks, offline streams."""
