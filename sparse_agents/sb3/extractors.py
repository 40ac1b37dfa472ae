"""Feature extractors for the networks sparse-RL papers use."""

from __future__ import annotations

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

__all__ = ["MinAtarCNN"]


class MinAtarCNN(BaseFeaturesExtractor):
    """The MinAtar network of Young & Tian (2019): one 3x3 convolution with 16 channels
    (stride 1) and a 128-unit linear layer, both ReLU, on MinAtar's channels-last
    ``(10, 10, C)`` bool observations. Use it with ``net_arch=[]`` for their exact
    network (the algorithm adds the output layer); its conv and linear layers are masked
    like the rest of a sparse policy.

    >>> DQN(SparseDQNPolicy, "MinAtar/Breakout-v1", policy_kwargs=dict(
    ...     features_extractor_class=MinAtarCNN, net_arch=[], sparsity=0.9))
    """

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 128,
                 channels: int = 16) -> None:
        shape = observation_space.shape
        if shape is None or len(shape) != 3:
            raise ValueError(f"MinAtarCNN needs (height, width, channels) observations, got "
                             f"shape {shape}")
        super().__init__(observation_space, features_dim)
        height, width, in_channels = shape
        self.conv = nn.Sequential(nn.Conv2d(in_channels, channels, 3, stride=1), nn.ReLU(),
                                  nn.Flatten())
        self.linear = nn.Sequential(
            nn.Linear(channels * (height - 2) * (width - 2), features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.linear(self.conv(observations.float().permute(0, 3, 1, 2)))
