"""`build_model(name, num_classes, in_chans=, img_size=, **kwargs)` from the declarations in ham/models/options.py."""

from __future__ import annotations

from torch import nn

from ham import registry


def build_model(name: str, num_classes: int, *, in_chans: int = 3, img_size: int = 224, **kwargs) -> nn.Module:
    builder = registry.get("model", name).implementation()
    try:
        return builder(num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
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
