"""The models' declarations: each one's typed options, builder and facts (ham/registry.py). Torch-free.

Facts the trainer and the checks read instead of testing names:
  channels_last    prefers the channels_last memory format on CUDA (convnets; trainer.channels_last=auto)
  no_decay_names   parameter names that get no weight decay (ViT tokens, timm's convention)
  patch_size       a ViT's patch: dataset.img_size must be a multiple of it
  fixed_resolution position embeddings fix the resolution (no progressive resizing, no other eval size)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

from ham.errors import ConfigError
from ham.options import Component, NoKwargs, opt, select
from ham.registry import declare, fact


@dataclass
class ModelConfig(Component):
    name: str = opt()
    kwargs: Dict[str, Any] = opt({}, doc="extra constructor arguments")

    @classmethod
    def cross_check(cls, node, root, path):
        patch = fact("model", node.name, "patch_size")
        size = select(root, "dataset.img_size")
        if patch and size is not None and (size < patch or size % patch):
            raise ConfigError(f"model={node.name} needs dataset.img_size to be a multiple of {patch} (its patch "
                              f"size), got {size} (dataset={select(root, 'dataset.name')}); allowed: "
                              f"dataset.img_size=224 or another multiple of {patch}, or another model")


@dataclass
class ResNet50Kwargs:
    zero_init_residual: bool = opt(True, doc="last BN gamma of each block = 0 (ffcv-imagenet)")


@dataclass
class DeiTKwargs:
    drop_path_rate: float = opt(0.1, ge=0, lt=1, doc="stochastic depth")
    drop_rate: float = opt(0.0, ge=0, lt=1, doc="dropout before the head")


@declare("model", "resnet18", build="ham.models.vision:resnet18_cifar", label="ResNet18", channels_last=True)
class ResNet18Model(ModelConfig):
    """torchvision ResNet18 with the CIFAR stem (3x3 stride-1 conv, no max-pool)."""
    kwargs: NoKwargs = opt(NoKwargs())


@declare("model", "resnet50", build="ham.models.vision:resnet50", label="ResNet50", channels_last=True)
class ResNet50Model(ModelConfig):
    """torchvision ResNet50 (weights=None)."""
    kwargs: ResNet50Kwargs = opt(ResNet50Kwargs())


@declare("model", "deit_small", build="ham.models.vision:deit_small", label="DeiT-Small", patch_size=16,
         fixed_resolution=True, no_decay_names=("pos_embed", "cls_token", "dist_token"))
class DeiTSmallModel(ModelConfig):
    """timm deit_small_patch16_224, from scratch."""
    kwargs: DeiTKwargs = opt(DeiTKwargs())


@declare("model", "small_cnn", build="ham.models.small:SmallCNN", label="small CNN")
class SmallCNNModel(ModelConfig):
    """A small conv net (the offline quickstart's)."""
    kwargs: NoKwargs = opt(NoKwargs())


@declare("model", "mlp", build="ham.models.small:MLP", label="MLP")
class MLPModel(ModelConfig):
    """An MLP with two hidden layers (tests)."""
    kwargs: NoKwargs = opt(NoKwargs())


@declare("model", "mnist_cnn", build="ham.models.small:MNISTCNN", label="MNIST CNN", channels_last=True)
class MNISTCNNModel(ModelConfig):
    """A LeNet-5-style conv net with BatchNorm for 28x28 digits (the second proxy's; 0.11M parameters)."""
    kwargs: NoKwargs = opt(NoKwargs())


@dataclass
class ViTTinyKwargs:
    embed_dim: int = opt(64, ge=8, doc="token width")
    depth: int = opt(4, ge=1, doc="transformer blocks")
    num_heads: int = opt(4, ge=1)
    mlp_ratio: float = opt(2.0, gt=0)
    drop_path_rate: float = opt(0.0, ge=0, lt=1, doc="stochastic depth")


@declare("model", "vit_tiny", build="ham.models.vision:vit_tiny", label="ViT-tiny", patch_size=7,
         fixed_resolution=True, no_decay_names=("pos_embed", "cls_token"))
class ViTTinyModel(ModelConfig):
    """A tiny timm VisionTransformer for 28x28 digits: patch 7 (16 tokens), width 64, 4 blocks (Table 8 in miniature)."""
    kwargs: ViTTinyKwargs = opt(ViTTinyKwargs())

# the graph neural networks (node classification), declared in their own file
from ham.models import graph_options  # noqa: E402,F401
