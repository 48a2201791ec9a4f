"""Model registry: `build_model(name, num_classes, in_chans=, img_size=, **kwargs)`."""

from __future__ import annotations

from typing import Callable

from torch import nn

from ham.errors import ConfigError
from ham.models import small, vision

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "resnet18": vision.resnet18_cifar,
    "resnet50": vision.resnet50,
    "deit_small": vision.deit_small,
    "small_cnn": small.SmallCNN,
    "mlp": small.MLP,
}
MODEL_NAMES = tuple(_REGISTRY)


def build_model(name: str, num_classes: int, *, in_chans: int = 3, img_size: int = 224, **kwargs) -> nn.Module:
    if name not in _REGISTRY:
        raise ConfigError(f"model.name={name!r} is not known; allowed: {', '.join(MODEL_NAMES)}")
    try:
        return _REGISTRY[name](num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
    except TypeError as e:  # an unknown model.kwargs key
        raise ConfigError(f"model.kwargs for {name!r} are not accepted: {e}") from None


def first_and_last_layer(model: nn.Module) -> tuple[str, str]:
    """Names of the first conv/patch-embedding module and of the classifier (keep_first/last_dense options)."""
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not layers:
        raise ValueError("model has no conv or linear layers")
    return layers[0], layers[-1]


__all__ = ["MODEL_NAMES", "build_model", "first_and_last_layer"]
