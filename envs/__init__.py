"""Gymnasium task streams for continual reinforcement learning (registered on import)."""
