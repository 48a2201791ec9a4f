"""The paper's vision models, from maintained libraries: torchvision ResNets, timm DeiT."""

from __future__ import annotations

from torch import nn


def resnet18_cifar(num_classes: int, in_chans: int = 3, img_size: int = 32, **kwargs) -> nn.Module:
    """torchvision ResNet18 with the usual CIFAR stem: 3x3 stride-1 first conv and no max-pool."""
    import torchvision  # here, not at import: importing torchvision pulls in torch._dynamo (seconds)

    model = torchvision.models.resnet18(weights=None, num_classes=num_classes, **kwargs)
    model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def resnet50(num_classes: int, in_chans: int = 3, img_size: int = 224, zero_init_residual: bool = True,
             **kwargs) -> nn.Module:
    """torchvision ResNet50 (weights=None); zero-init of each block's last BN gamma (ffcv-imagenet, Goyal et al.)."""
    import torchvision

    model = torchvision.models.resnet50(weights=None, num_classes=num_classes,
                                        zero_init_residual=zero_init_residual, **kwargs)
    if in_chans != 3:
        model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def deit_small(num_classes: int, in_chans: int = 3, img_size: int = 224, drop_path_rate: float = 0.1,
               **kwargs) -> nn.Module:
    """timm deit_small_patch16_224 trained from scratch (pretrained=False: nothing is downloaded)."""
    import timm

    return timm.create_model("deit_small_patch16_224", pretrained=False, num_classes=num_classes,
                             in_chans=in_chans, img_size=img_size, drop_path_rate=drop_path_rate, **kwargs)


def vit_tiny(num_classes: int, in_chans: int = 1, img_size: int = 28, embed_dim: int = 64, depth: int = 4,
             num_heads: int = 4, mlp_ratio: float = 2.0, drop_path_rate: float = 0.0, **kwargs) -> nn.Module:
    """A tiny timm VisionTransformer (DeiT's architecture, scaled down) for 28x28 images, patch 7: 16 tokens."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=img_size, patch_size=7, in_chans=in_chans, num_classes=num_classes,
                             embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                             drop_path_rate=drop_path_rate, **kwargs)
