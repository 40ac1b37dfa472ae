"""Small models and training loops shared by the tests."""

import torch
from torch import nn


def mlp(seed: int = 0, sizes=(12, 48, 48, 4)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 5),
    )


def batch(model: nn.Module, step: int, n: int = 16):
    g = torch.Generator().manual_seed(1000 + step)
    if isinstance(model[0], nn.Conv2d):
        x = torch.randn(n, 3, 8, 8, generator=g)
    else:
        x = torch.randn(n, model[0].in_features, generator=g)
    out = model[-1].out_features
    y = torch.randint(0, out, (n,), generator=g)
    return x, y


def train_step(model: nn.Module, opt: torch.optim.Optimizer, step: int) -> float:
    x, y = batch(model, step)
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def make_opt(name: str, model: nn.Module) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=1e-2)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    raise ValueError(name)
