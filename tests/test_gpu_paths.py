"""GPU-path choices that are checkable on CPU: fused base optimizers, the trainer's DDP options, the asynchronous
stop agreement, and torchrun with one process getting a real process group (the DDP path)."""

import socket

import pytest
import torch
import torch.distributed as dist

from ham.optim.factory import build_optimizer, fused_supported
from ham.train import distributed as D


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 6 * 6, 4))


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_base_optimizer_is_fused_where_torch_supports_it(name):
    # every key but name/no_weight_decay_1d/fused/sam is the torch optimizer's own argument: momentum is SGD's
    cfg = {"name": name, "lr": 0.01, "weight_decay": 5e-5, **({"momentum": 0.9} if name == "sgd" else {})}
    ham = {"alpha": 200.0, "beta": 1e-3}
    auto = build_optimizer(_model(), cfg, ham)
    assert fused_supported(auto.param_groups) and auto.base.defaults["fused"] is True  # CPU: torch >= 2.4
    assert not build_optimizer(_model(), {**cfg, "fused": False}, ham).base.defaults.get("fused")
    mixed = [{"params": [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2, dtype=torch.int64),
                                                                               requires_grad=False)]}]
    assert not fused_supported(mixed)


@pytest.mark.threads  # bit-identical with torch's default threads (as measured); with one thread it is not
def test_fused_sgd_with_ham_gives_the_same_weights_as_the_foreach_step():
    cfg = {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-5}
    finals = []
    for fused in ("auto", False):
        model = _model()
        opt = build_optimizer(model, {**cfg, "fused": fused}, {"alpha": 200.0, "beta": 1e-3})
        g = torch.Generator().manual_seed(1)
        for _ in range(3):
            x, y = torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 4, (4,), generator=g)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
        finals.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*finals):
        assert torch.equal(a, b)  # torch's fused SGD is bit-identical to its foreach step on CPU


def test_trainer_ddp_options_avoid_the_extra_grad_copy_and_per_forward_buffer_broadcast():
    assert D.DDP_OPTIONS["gradient_as_bucket_view"] is True
    assert D.DDP_OPTIONS.get("forward_sync_buffers", D.DDP_OPTIONS.get("broadcast_buffers")) is False


@pytest.fixture
def group_of_one():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_async_agreement_answers_one_poll_late(group_of_one):
    agree = D.AsyncAgreement(torch.device("cpu"))
    assert agree.poll(False) is False  # nothing pending yet
    assert agree.poll(True) is False  # answers the previous poll (False); starts True
    assert agree.poll(False) is True  # the True started one poll ago
    assert agree.poll(False) is False
    assert agree.drain() is False and agree.drain() is False  # nothing left in flight


def test_async_agreement_without_a_group_answers_at_once():
    agree = D.AsyncAgreement(torch.device("cpu"))
    assert agree.poll(True) is True and agree.poll(False) is False


def test_torchrun_with_one_process_gets_a_process_group(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(k, v)
    env = D.setup_distributed()
    try:
        assert dist.is_initialized() and env.world_size == 1 and env.process_group and env.distributed
    finally:
        D.teardown_distributed()
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    plain = D.setup_distributed()
    assert not dist.is_initialized() and not plain.distributed  # a plain `python train.py`: no group
