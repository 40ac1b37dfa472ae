"""A small multi-head Avalanche model and an eval-logit capture plugin, shared by the
Avalanche tests."""

import torch
from avalanche.core import SupervisedPlugin
from avalanche.models import MultiHeadClassifier, MultiTaskModule
from torch import nn


class Net(MultiTaskModule):
    """64 -> 32 -> 32 backbone and one 2-class head per task label."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.classifier = MultiHeadClassifier(32, 2, masking=False)

    def forward_single_task(self, x, task_label):
        return self.classifier(self.backbone(x), task_label)


class Capture(SupervisedPlugin):
    """Eval logits per (evaluation round, experience)."""

    def __init__(self) -> None:
        super().__init__()
        self.round = 0
        self.outputs: dict = {}

    def after_eval_forward(self, strategy, **kwargs):
        key = (self.round, strategy.experience.current_experience)
        self.outputs.setdefault(key, []).append(strategy.mb_output.detach().clone())

    def after_eval(self, strategy, **kwargs):
        self.round += 1
