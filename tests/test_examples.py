"""Each example under examples/ runs at tiny size, and HAM demonstrably acted in it: the weights differ from the
same run with the base optimizer alone, and the hyperbolic step kept the sign of every weight it touched."""

from __future__ import annotations

import pytest
import torch

from ham_probe import HyperbolicStepProbe, assert_weight_tensors_differ, load_example


@pytest.fixture
def probe(monkeypatch):
    return HyperbolicStepProbe().install(monkeypatch)


def test_plain_pytorch_loop(probe):
    ex = load_example("plain_pytorch")
    with_ham = ex.train(steps=15)
    probe.assert_acted(min_calls=15)
    # the scheduler built on the wrapper drove the hyperbolic step's lr (cosine, decreasing)
    assert probe.lrs[0] == pytest.approx(0.05) and probe.lrs[-1] < probe.lrs[0]
    calls = probe.calls
    base = ex.train(steps=15, use_ham=False)
    assert probe.calls == calls  # the plain SGD run never enters HAM
    assert_weight_tensors_differ(with_ham, base)


def test_timm_optimizer_factory_scheduler_and_ema(probe):
    pytest.importorskip("timm")
    ex = load_example("timm_optim")
    kw = dict(epochs=2, n=32, batch_size=16, lr=1e-3)
    model, ema = ex.train(**kw)
    probe.assert_acted(min_calls=4)
    # timm's scheduler wrote the warmup lr into the wrapper's (= the base's) groups before the first step and
    # the hyperbolic step used it; later steps used the cosine-scheduled values
    assert probe.lrs[0] == pytest.approx(1e-4) and len(set(probe.lrs)) > 2
    base_model, _ = ex.train(use_ham=False, **kw)
    assert_weight_tensors_differ(model, base_model)
    # the EMA copy tracks the HAM-trained weights (and is not them)
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), ema.parameters()))


def test_lightning_configure_optimizers_checkpoint_and_resume(probe, tmp_path):
    pytest.importorskip("lightning")
    ex = load_example("lightning_ham")
    n, steps_per_epoch = 64, 2  # batch size 32
    straight = ex.fit(tmp_path / "straight", epochs=2, n=n)
    probe.assert_acted(min_calls=2 * steps_per_epoch)
    assert probe.calls == 2 * steps_per_epoch

    ex.fit(tmp_path / "resumed", epochs=1, n=n)
    assert (tmp_path / "resumed" / "last.ckpt").exists()
    ckpt = torch.load(tmp_path / "resumed" / "last.ckpt", weights_only=False)
    momentum = ckpt["optimizer_states"][0]["state"]
    assert momentum and all("momentum_buffer" in s for s in momentum.values())  # the base's state, via HAM
    resumed = ex.fit(tmp_path / "resumed", epochs=2, n=n)   # picks up last.ckpt
    assert probe.calls == 4 * steps_per_epoch  # 2 straight + 1 + 1 resumed epochs
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), f"{name}: resumed run differs from the uninterrupted one"

    base = ex.fit(tmp_path / "base", epochs=2, n=n, use_ham=False)
    assert_weight_tensors_differ(straight, base)


def test_hf_trainer_peft_lora_ham_on_lora_matrices_only(probe):
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    ex = load_example("hf_lora")
    steps = 4
    model = ex.train(steps=steps)
    probe.assert_acted(min_calls=steps)

    names = {id(p): n for n, p in model.named_parameters()}
    lora = {n for n, p in model.named_parameters() if "lora_" in n}
    assert lora and {names[i] for i in probe.managed} == lora  # HAM acted on the LoRA matrices and nothing else
    # the randomly initialised base model is frozen: bit-identical to a fresh copy built from the same seed
    fresh = ex.tiny_llama(seed=0).state_dict()
    trained = {k.replace(".base_layer.", "."): v for k, v in model.get_base_model().state_dict().items()
               if "lora_" not in k}
    assert trained.keys() == fresh.keys()
    for k, v in fresh.items():
        assert torch.equal(trained[k], v), f"frozen {k} changed"

    plain = ex.train(steps=steps, use_ham=False)
    lora_ham = {n: p for n, p in model.named_parameters() if n in lora}
    lora_plain = {n: p for n, p in plain.named_parameters() if n in lora}
    assert assert_weight_tensors_differ(lora_ham, lora_plain) == len(lora)
