"""Model registry: every model trains one step on CPU at a tiny size; structure and parameter counts."""

import pytest
import torch
from torch import nn

from ham.models import MODEL_NAMES, build_model, classifier_and_first_layer

# (name, num_classes, build kwargs, input shape): the smallest inputs each model accepts
TINY = {
    "resnet18": (100, {"img_size": 32}, (2, 3, 32, 32)),
    "resnet50": (10, {"img_size": 32}, (2, 3, 32, 32)),
    "deit_small": (10, {"img_size": 32}, (2, 3, 32, 32)),  # 2x2 patches of 16
    "small_cnn": (10, {"in_chans": 1, "img_size": 8}, (4, 1, 8, 8)),
    "mlp": (10, {"in_chans": 1, "img_size": 8}, (4, 1, 8, 8)),
    "mnist_cnn": (10, {"in_chans": 1, "img_size": 28}, (4, 1, 28, 28)),
    "vit_tiny": (10, {"in_chans": 1, "img_size": 28}, (2, 1, 28, 28)),
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_covers_all_models():
    from ham import registry

    # the graph models (fact graph) take graphs, not image tensors: tests/test_node.py builds and trains them
    assert set(MODEL_NAMES) - set(registry.named_with("model", "graph")) == set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_backward_tiny(name):
    torch.manual_seed(0)
    num_classes, kwargs, shape = TINY[name]
    model = build_model(name, num_classes, **kwargs)
    model.train()
    out = model(torch.randn(shape))
    assert out.shape == (shape[0], num_classes)
    torch.nn.functional.cross_entropy(out, torch.arange(shape[0]) % num_classes).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # first layer gets gradient (the whole graph is connected). ResNet50's zero-init last BN gammas block
    # gradient to the conv weights inside the residual branches at step 0, but not to the stem.
    first, classifier = classifier_and_first_layer(model)
    assert model.get_submodule(first).weight.grad.abs().sum() > 0
    assert model.get_submodule(classifier).weight.grad.abs().sum() > 0


def test_param_counts_match_the_reference_architectures():
    # published sizes: ResNet-50 25.557M, DeiT-S 22.05M (1000 classes, 224 px); CIFAR ResNet18 at 100 classes
    assert n_params(build_model("resnet50", 1000)) == 25_557_032
    assert n_params(build_model("deit_small", 1000)) == 22_050_664
    assert n_params(build_model("resnet18", 100, img_size=32)) == 11_220_132
    assert 50_000 <= n_params(build_model("small_cnn", 10, in_chans=1, img_size=8)) <= 200_000
    assert n_params(build_model("mnist_cnn", 10, in_chans=1, img_size=28)) == 105_914
    assert n_params(build_model("vit_tiny", 10, in_chans=1, img_size=28)) == 139_018


def test_resnet18_has_cifar_stem():
    model = build_model("resnet18", 100, img_size=32)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    # 32x32 input keeps full resolution through layer1 (no stride-2 stem, no max-pool)
    x = model.relu(model.bn1(model.conv1(torch.randn(1, 3, 32, 32))))
    assert model.layer1(model.maxpool(x)).shape[-2:] == (32, 32)


@pytest.mark.parametrize("zero_init", [True, False])
def test_resnet50_zero_init_residual(zero_init):
    model = build_model("resnet50", 10, **({} if zero_init else {"zero_init_residual": False}))
    gammas = torch.cat([b.bn3.weight.detach() for layer in (model.layer1, model.layer4) for b in layer])
    assert bool((gammas == 0).all()) is zero_init
    assert bool((gammas == 1).all()) is not zero_init


def test_deit_small_settings():
    model = build_model("deit_small", 10, img_size=32)
    assert model.patch_embed.proj.kernel_size == (16, 16) and model.patch_embed.num_patches == 4
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)  # DeiT's stochastic depth (last block)
    model0 = build_model("deit_small", 10, img_size=32, drop_path_rate=0.0)
    assert isinstance(model0.blocks[-1].drop_path1, nn.Identity)


def test_small_cnn_has_every_parameter_kind():
    model = build_model("small_cnn", 10, in_chans=1, img_size=8)
    kinds = {(p.ndim, "bn" if isinstance(m, nn.BatchNorm2d) else type(m).__name__)
             for m in model.modules() for p in m.parameters(recurse=False)}
    assert {(4, "Conv2d"), (2, "Linear"), (1, "Linear"), (1, "bn")} <= kinds


def test_classifier_and_first_layer_names():
    assert classifier_and_first_layer(build_model("resnet50", 10)) == ("conv1", "fc")
    assert classifier_and_first_layer(build_model("deit_small", 10, img_size=32)) == ("patch_embed.proj", "head")
    first, last = classifier_and_first_layer(build_model("small_cnn", 7, in_chans=1, img_size=8))
    model = build_model("small_cnn", 7, in_chans=1, img_size=8)
    assert model.get_submodule(first).in_channels == 1 and model.get_submodule(last).out_features == 7


def test_unknown_name_and_kwarg_are_plain_errors():
    """Library errors use the library's own argument names; the CLI's schema catches config values first."""
    with pytest.raises(ValueError, match=r"unknown model 'vgg'; allowed: resnet18"):
        build_model("vgg", 10)
    with pytest.raises(TypeError, match="kwargs for 'small_cnn'"):
        build_model("small_cnn", 10, depth=3)
