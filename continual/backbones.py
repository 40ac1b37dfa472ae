"""Backbones (feature extractors) for the continual-learning runs.

:func:`build_backbone` returns ``(module, features)``: a module mapping a batch of
inputs to ``(batch, features)`` vectors, on which :mod:`continual.experiment` puts its
heads. Choices (:data:`BACKBONES`):

* ``"mlp"``: ``in-hidden-hidden`` ReLU MLP (images are flattened first);
* ``"cnn"``: 2 conv + 2 max-pool + a ``hidden`` linear layer;
* ``"resnet18"``: torchvision's ResNet-18 in its CIFAR form: 3x3 stride-1 first conv,
  no max-pool, no ``fc`` (512 features);
* ``"mobilenetv2"``: torchvision's MobileNetV2 with a stride-1 first conv, no
  classifier (1280 features); ``width`` is its ``width_mult``;
* ``"slimresnet18"``: Avalanche's ``SlimResNet18`` (GEM's reduced ResNet-18, ``nf=20``,
  ``width`` scales ``nf``), with its first conv taking the input's channels and a global
  average pool instead of its fixed 4x4 pool (160 features at ``width=1``).

Conv backbones take images ``(C, H, W)``; flat inputs whose size is a square (digits'
64, MNIST's 784) are read as ``(1, s, s)`` images. Small inputs work: on 8x8 digits the
ResNet stages shrink to 1x1. Nothing is downloaded (``weights=None``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor, nn

__all__ = ["BACKBONES", "build_backbone", "default_backbone", "image_shape"]

Builder = Callable[[tuple[int, ...], int, float], tuple[nn.Module, int]]


def image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(C, H, W)`` of an input: images as they are, flat square sizes as ``(1, s, s)``."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    if len(shape) == 1 and math.isqrt(shape[0]) ** 2 == shape[0]:
        s = math.isqrt(shape[0])
        return (1, s, s)
    raise ValueError(f"a conv backbone needs (channels, height, width) inputs or a flat "
                     f"input of square size, got {input_shape}")


def default_backbone(input_shape: tuple[int, ...]) -> str:
    """The backbone a run gets without ``backbone=``: ``mlp`` for flat inputs, ``cnn``
    for images."""
    return "cnn" if len(input_shape) == 3 else "mlp"


def _as_image(input_shape: tuple[int, ...], body: nn.Module) -> nn.Module:
    """``body`` (which takes images), behind an ``Unflatten`` for flat inputs."""
    if len(input_shape) == 3:
        return body
    return nn.Sequential(nn.Unflatten(1, image_shape(input_shape)), body)


def _mlp(input_shape: tuple[int, ...], hidden: int, width: float) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = [] if len(input_shape) == 1 else [nn.Flatten()]
    layers += [nn.Linear(math.prod(input_shape), hidden), nn.ReLU(),
               nn.Linear(hidden, hidden), nn.ReLU()]
    return nn.Sequential(*layers), hidden


def _cnn(input_shape: tuple[int, ...], hidden: int, width: float) -> tuple[nn.Module, int]:
    c, h, w = image_shape(input_shape)
    body = nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * (h // 4) * (w // 4), hidden), nn.ReLU())
    return _as_image(input_shape, body), hidden


def _resnet18(input_shape: tuple[int, ...], hidden: int, width: float) -> tuple[nn.Module, int]:
    from torchvision.models import resnet18

    if width != 1.0:
        raise ValueError(f"resnet18 has no width option (torchvision's BasicBlock needs "
                         f"64 base channels), got width={width}")
    c = image_shape(input_shape)[0]
    net = resnet18(weights=None)
    net.conv1 = nn.Conv2d(c, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    features = net.fc.in_features
    net.fc = nn.Identity()
    return _as_image(input_shape, net), features


def _mobilenetv2(input_shape: tuple[int, ...], hidden: int,
                 width: float) -> tuple[nn.Module, int]:
    from torchvision.models import mobilenet_v2

    c = image_shape(input_shape)[0]
    net = mobilenet_v2(weights=None, width_mult=width)
    first = net.features[0][0]
    net.features[0][0] = nn.Conv2d(c, first.out_channels, kernel_size=3, stride=1,
                                   padding=1, bias=False)
    features = net.last_channel
    net.classifier = nn.Identity()
    return _as_image(input_shape, net), features


class _SlimFeatures(nn.Module):
    """Avalanche's ``SlimResNet18`` without its classifier, for any image size."""

    def __init__(self, channels: int, nf: int) -> None:
        super().__init__()
        from avalanche.models import SlimResNet18

        net = SlimResNet18(1, nf=nf)
        net.conv1 = nn.Conv2d(channels, nf, kernel_size=3, stride=1, padding=1, bias=False)
        self.conv1, self.bn1 = net.conv1, net.bn1
        self.layers = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.features = net.linear.in_features

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.layers(nn.functional.relu(self.bn1(self.conv1(x)))))


def _slimresnet18(input_shape: tuple[int, ...], hidden: int,
                  width: float) -> tuple[nn.Module, int]:
    nf = max(1, round(20 * width))
    net = _SlimFeatures(image_shape(input_shape)[0], nf)
    return _as_image(input_shape, net), net.features


#: every backbone name and its builder ``(input_shape, hidden, width) -> (module, features)``
BACKBONES: dict[str, Builder] = {
    "mlp": _mlp,
    "cnn": _cnn,
    "resnet18": _resnet18,
    "mobilenetv2": _mobilenetv2,
    "slimresnet18": _slimresnet18,
}


def build_backbone(name: str | None, input_shape: tuple[int, ...], *, hidden: int = 256,
                   width: float = 1.0) -> tuple[nn.Module, int]:
    """``(feature extractor, feature size)`` of backbone ``name`` for ``input_shape``.

    Args:
        name: a key of :data:`BACKBONES`, or None for :func:`default_backbone`.
        input_shape: one sample's shape, ``(features,)`` or ``(C, H, W)``.
        hidden: width of the ``mlp`` and ``cnn`` hidden layers (others ignore it).
        width: channel multiplier of ``mobilenetv2`` and ``slimresnet18`` (``resnet18``
            and the ``mlp``/``cnn`` accept only 1.0 / ignore it).
    """
    name = default_backbone(input_shape) if name is None else name
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {tuple(BACKBONES)}, got {name!r}")
    if len(input_shape) not in (1, 3):
        raise ValueError(f"input_shape must be (features,) or (channels, height, width), "
                         f"got {input_shape}")
    if int(hidden) < 1 or not float(width) > 0:
        raise ValueError(f"hidden must be >= 1 and width > 0, got {hidden}, {width}")
    return BACKBONES[name](tuple(input_shape), int(hidden), float(width))
