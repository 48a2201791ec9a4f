"""HAM inside the usual training machinery: torch.compile, torch.amp (GradScaler + fp16 autocast),
torch.optim.swa_utils (SWA, EMA) and timm's ModelEmaV3. Each runs unchanged with the wrapper."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ham import HAM
from ham_probe import HyperbolicStepProbe


@pytest.fixture
def probe(monkeypatch):
    return HyperbolicStepProbe().install(monkeypatch)


def _model(seed: int = 0, bn: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(8, 16)] + ([nn.BatchNorm1d(16)] if bn else []) + [nn.ReLU(), nn.Linear(16, 3)]
    return nn.Sequential(*layers)


def _batches(n: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)) for _ in range(n)]


def _train(model, opt, batches, sched=None, forward=None, after_step=None):
    forward = forward or model
    for x, y in batches:
        F.cross_entropy(forward(x), y).backward()
        opt.step()
        opt.zero_grad()
        if sched is not None:
            sched.step()
        if after_step is not None:
            after_step()
    return model


def _ham(model, **kw):
    return HAM(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), alpha=20.0, beta=1e-3, **kw)


# ---------------------------------------------------------------- torch.compile

def test_compiled_model_trains_like_eager():
    """The usual recipe: compile the model (fullgraph: HAM puts nothing in it), keep the loop eager."""
    batches = _batches()
    eager = _model()
    opt = _ham(eager)
    _train(eager, opt, batches, torch.optim.lr_scheduler.StepLR(opt, 1, 0.7))

    model = _model()
    opt = _ham(model)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    _train(model, opt, batches, torch.optim.lr_scheduler.StepLR(opt, 1, 0.7), forward=compiled)
    for a, b in zip(eager.parameters(), model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(model[0].weight, _model()[0].weight)


class _GraphBreaks(logging.Handler):
    def __init__(self):
        super().__init__()
        self.where: list[str] = []

    def emit(self, record):
        first = record.getMessage().splitlines()[0]
        if " at " in first:
            self.where.append(first.rsplit(" at ", 1)[1])


def _graph_breaks(opt_factory):
    """Compile a whole train step (forward, backward, opt.step, zero_grad); return where dynamo broke the graph."""
    import torch._dynamo

    torch._dynamo.reset()
    model = _model()
    opt = opt_factory(model)
    x, y = _batches(1)[0]

    def train_step():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    handler = _GraphBreaks()
    torch._logging.set_logs(graph_breaks=True)
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict) if "graph_breaks" in name]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        compiled = torch.compile(train_step, backend="eager")
        for _ in range(2):
            compiled()
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
        torch._logging.set_logs()
        torch._dynamo.reset()
    return model, handler.where


def test_compiled_train_step_graph_breaks_only_where_torch_optimizers_break():
    """HAM adds no graph break of its own: with the default backend the hyperbolic step is traced (foreach ops),
    and every break is one torch's own SGD also has (backward, the optimizer-step boundary inside torch.optim,
    zero_grad)."""
    sgd_model, sgd_breaks = _graph_breaks(lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9))
    ham_model, ham_breaks = _graph_breaks(_ham)
    assert sgd_breaks, "graph-break logging captured nothing: the check would be vacuous"
    in_ham = [w for w in ham_breaks if f"{os.sep}ham{os.sep}optim{os.sep}" in w and "wrapper.py" not in w]
    assert not in_ham, f"graph breaks inside HAM's step: {in_ham}"
    assert len(ham_breaks) <= len(sgd_breaks) + 1  # +1: zero_grad is reached through the wrapper's method

    # and the two compiled steps computed what two eager ones do
    eager = _model()
    opt = _ham(eager)
    _train(eager, opt, _batches(1) * 2)
    for a, b in zip(eager.parameters(), ham_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _ham_tensor_lr(model):
    return HAM(torch.optim.SGD(model.parameters(), lr=torch.tensor(0.1), momentum=0.9), alpha=20.0, beta=1e-3)


def test_compiled_optimizer_step_matches_eager_and_lr_changes_do_not_recompile():
    """torch.compile(opt.step), the PyTorch recipe for compiling an optimizer, works on the wrapper; with a tensor
    lr (as PyTorch recommends for compiled optimizers) a scheduler changing it recompiles nothing."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    batches = _batches(5)
    eager = _model()
    opt = _ham_tensor_lr(eager)
    _train(eager, opt, batches, torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.8**k))
    torch._dynamo.reset()
    counters.clear()
    model = _model()
    opt = _ham_tensor_lr(model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.8**k)
    compiled_step = torch.compile(opt.step, backend="aot_eager")
    graphs = []
    for x, y in batches:
        F.cross_entropy(model(x), y).backward()
        compiled_step()
        opt.zero_grad()
        sched.step()
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[1] > 0 and graphs[-1] == graphs[1], f"graphs compiled after each step: {graphs}"
    for a, b in zip(eager.parameters(), model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_inductor_compiled_model_and_step_match_eager():
    batches = _batches(3)
    eager = _model()
    _train(eager, _ham(eager), batches)
    model = _model()
    opt = _ham(model)
    forward, step = torch.compile(model), torch.compile(opt.step)
    for x, y in batches:
        F.cross_entropy(forward(x), y).backward()
        step()
        opt.zero_grad()
    for a, b in zip(eager.parameters(), model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- torch.amp

def _amp_run(scaler, batches, probe=None):
    model = _model()
    opt = _ham(model)
    for x, y in batches:
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.cross_entropy(model(x), y)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        opt.zero_grad()
    return model


def test_grad_scaler_fp16_hyperbolic_step_uses_unscaled_grads(probe):
    batches = _batches()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=1000)
    scaled = _amp_run(scaler, batches)
    assert scaler.get_scale() == 2.0**12  # no overflow: every step was taken
    probe.assert_acted(min_calls=len(batches))
    unscaled = _amp_run(None, batches)
    # were the grads still multiplied by 4096, the exponents would saturate at the clamp: far apart
    for a, b in zip(scaled.parameters(), unscaled.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_grad_scaler_overflowing_steps_skip_both_steps(probe):
    batches = _batches()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**20, growth_interval=1000)  # fp16 grads overflow at first
    before = _model()
    model = _amp_run(scaler, batches)
    skipped = round(20 - torch.log2(torch.tensor(scaler.get_scale())).item())  # backoff 0.5 per skipped step
    assert 0 < skipped < len(batches) - 1
    assert probe.calls == len(batches) - skipped
    probe.assert_acted(min_calls=1)
    assert not torch.equal(model[0].weight, before[0].weight)


# ---------------------------------------------------------------- torch.optim.swa_utils, timm EMA

def test_swa_utils_averaged_model_swalr_and_update_bn(probe):
    from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

    batches = _batches(8)
    model = _model(bn=True)
    opt = _ham(model)
    swa_model = AveragedModel(model)
    swa_sched = SWALR(opt, swa_lr=0.02, anneal_epochs=2, anneal_strategy="linear")
    snapshots = []

    def after_step():
        swa_model.update_parameters(model)
        swa_sched.step()
        snapshots.append([p.detach().clone() for p in model.parameters()])

    _train(model, opt, batches, after_step=after_step)
    probe.assert_acted(min_calls=len(batches))
    # SWALR wrote the groups' lr, and the hyperbolic step ran with it: annealed 0.1 -> 0.02, then held
    assert probe.lrs == pytest.approx([0.1, 0.06] + [0.02] * (len(batches) - 2))
    for i, p in enumerate(swa_model.module.parameters()):
        torch.testing.assert_close(p, torch.stack([s[i] for s in snapshots]).mean(0), rtol=1e-5, atol=1e-6)
    bn = swa_model.module[1]
    bn.reset_running_stats()
    update_bn([x for x, _ in batches], swa_model)
    # cumulative average of the batch means of the averaged model's first-layer outputs
    with torch.no_grad():
        want = torch.stack([swa_model.module[0](x).mean(0) for x, _ in batches]).mean(0)
    torch.testing.assert_close(bn.running_mean, want, rtol=1e-5, atol=1e-6)
    assert bn.num_batches_tracked.item() == len(batches)


def test_swa_utils_ema_averaged_model():
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    model = _model()
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    manual = [p.detach().clone() for p in model.parameters()]

    first = [True]

    def after_step():
        ema.update_parameters(model)
        for m, p in zip(manual, model.parameters()):  # the first update copies, later ones average
            m.copy_(p.detach()) if first[0] else m.mul_(0.9).add_(p.detach(), alpha=0.1)
        first[0] = False

    _train(model, _ham(model), _batches(), after_step=after_step)
    for a, b in zip(ema.module.parameters(), manual):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ema.module[0].weight, model[0].weight)


def test_timm_model_ema_v3():
    timm_utils = pytest.importorskip("timm.utils")
    model = _model()
    ema = timm_utils.ModelEmaV3(model, decay=0.8)
    manual = {k: v.detach().clone() for k, v in model.state_dict().items()}
    steps = [0]

    def after_step():
        steps[0] += 1
        ema.update(model, step=steps[0])
        for k, v in model.state_dict().items():  # timm: decay 0 (a copy) at step 1, then `decay`
            manual[k].copy_(v) if steps[0] == 1 else manual[k].mul_(0.8).add_(v, alpha=0.2)

    _train(model, _ham(model), _batches(), after_step=after_step)
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v, manual[k], rtol=1e-5, atol=1e-6)
    assert not torch.equal(ema.module[0].weight, model[0].weight)
