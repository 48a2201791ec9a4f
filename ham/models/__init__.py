"""Model registry: `build_model(name, num_classes, in_chans=, img_size=, **kwargs)`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

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
        raise ValueError(f"name={name!r} is not known; allowed: {', '.join(MODEL_NAMES)}")
    try:
        return _REGISTRY[name](num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
    except TypeError as e:  # an unknown model.kwargs key
        raise TypeError(f"kwargs for {name!r} are not accepted: {e}") from None


def classifier_and_first_layer(model: nn.Module) -> tuple[str, str]:
    """(first layer name, classifier name), for the sparsifiers' keep_first_dense / keep_last_dense options.

    First: the first Conv2d/Linear registered (ResNet `conv1`, ViT `patch_embed.proj`). Classifier: timm's
    `get_classifier()` when the model has one, else the last Linear registered (torchvision `fc`, our nets).
    """
    names = {m: n for n, m in model.named_modules()}
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not layers:
        raise ValueError("model has no conv or linear layers")
    classifier = None
    if hasattr(model, "get_classifier"):
        classifier = names.get(model.get_classifier())
    if classifier is None:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        classifier = linears[-1] if linears else layers[-1]
    return layers[0], classifier


__all__ = ["MODEL_NAMES", "build_model", "classifier_and_first_layer"]
