"""Checkpoint integrity (issue 18 item 2): every checkpoint has a sha256 digest beside it, checked before use; a
damaged or unfit newest checkpoint is set aside (never deleted) with one line naming it and the one used, and
the recovered run ends with the uninterrupted run's weights, bit for bit; none usable: one line, exit 2."""

import os
import random

import pytest
import torch
from tiny_loop import TinyLoop
from torch import nn

from ham import HAM
from ham.errors import ConfigError
from ham.optim.factory import build_param_groups
from ham.sparse.base import TrainSchedule
from ham.sparse.registry import build_sparsifier
from ham.train import checkpoint as ck

SPE, LAST = 3, 12  # steps per epoch, last step; checkpoints at steps 4 and 8


class Loop(TinyLoop):
    steps_per_epoch = SPE

    def __init__(self, ckpt_dir="unused", width=8):
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                   nn.Flatten(), nn.Linear(width * 8 * 8, 10))
        self.sp = build_sparsifier("dense")
        self.sp.setup(self.model, TrainSchedule(LAST // SPE, SPE))
        groups = build_param_groups(self.model, weight_decay=1e-3, overrides=self.sp.param_group_overrides())
        self.opt = HAM(torch.optim.SGD(groups, lr=0.05, momentum=0.9, weight_decay=1e-3), alpha=200.0, beta=1e-3)
        self.sp.attach_optimizer(self.opt)
        g = torch.Generator().manual_seed(1)
        self.data = [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g))
                     for _ in range(SPE)]
        self.start(ckpt_dir)

    def batch(self, step):
        x, y = self.data[step % SPE]
        return x + 0.01 * torch.randn_like(x), y  # the global torch RNG: a resume must restore it exactly


@pytest.fixture(scope="module")
def uninterrupted():
    return {k: v.clone() for k, v in Loop().run_to(LAST).model.state_dict().items()}


def interrupted_run(ckpt_dir):
    """A run that checkpointed at steps 4 and 8, then died."""
    loop = Loop(ckpt_dir)
    for step in (4, 8):
        loop.run_to(step)
        loop.state.save()
    return [ck.checkpoint_path(ckpt_dir, s) for s in (4, 8)]


def random_inside(path):  # 4 KiB of random bytes in the middle, size unchanged (the case)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = random.Random(0).randbytes(4096)
    path.write_bytes(bytes(data))


def truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def zero_length(path):
    path.write_bytes(b"")


def wrong_model(path):  # intact (its own digest) but another model's: unusable here
    other = Loop(width=4)
    other.run(1)
    torch.save(other.state.state_dict(), path)
    ck.write_digest(path, [ck.file_digest(path)])


def digest_of_another_file(path):  # a digest that belongs to other bytes
    ck.write_digest(path, ["0" * 64])


DAMAGE = {"random_4k_inside": (random_inside, "damaged"), "truncated": (truncated, "damaged"),
          "zero_length": (zero_length, "damaged"), "wrong_model": (wrong_model, "unfit"),
          "wrong_digest": (digest_of_another_file, "damaged")}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_newest_checkpoint_recovers_from_the_newest_intact_one_bit_for_bit(case, tmp_path, capsys,
                                                                                  uninterrupted):
    older, newest = interrupted_run(tmp_path)
    damage, kind = DAMAGE[case]
    damage(newest)
    damaged_bytes = newest.read_bytes()
    loop = Loop(tmp_path)
    assert loop.state.resume("auto") and loop.step == 4
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1, err
    aside = newest.with_name(newest.name + "." + kind)
    assert newest.name in warnings[0] and f"resuming from {older.name}" in warnings[0] and str(aside) in warnings[0]
    assert f"resumed from {older}" in err
    assert aside.read_bytes() == damaged_bytes  # set aside, never deleted ...
    loop.run_to(8)
    loop.state.save()  # ... nor overwritten by the recovered run's own checkpoint of that step
    assert aside.read_bytes() == damaged_bytes and ck.verify_checkpoint(newest)
    loop.run_to(LAST)
    final = loop.model.state_dict()
    assert all(torch.equal(final[k], uninterrupted[k]) for k in uninterrupted)
    # a second resume finds the recovered run's own, intact checkpoints: no warning
    assert Loop(tmp_path).state.resume("auto")
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("case", ["random_4k_inside", "truncated", "zero_length", "wrong_model"])
def test_all_checkpoints_unusable_is_one_line_and_nothing_is_renamed(case, tmp_path, capsys):
    paths = interrupted_run(tmp_path)
    damage = DAMAGE[case][0]
    for p in paths:
        damage(p)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ConfigError) as e:
        Loop(tmp_path).state.resume("auto")
    msg = str(e.value)
    assert "\n" not in msg and all(p.name in msg for p in paths) and "resume=never" in msg, msg
    assert sorted(os.listdir(tmp_path)) == before  # a rerun answers the same; the user decides


def test_checkpoint_without_digest_loads_with_a_warning(tmp_path, capsys, uninterrupted):
    _, newest = interrupted_run(tmp_path)
    ck.digest_path(newest).unlink()  # as written before digests existed
    loop = Loop(tmp_path)
    assert loop.state.resume("auto") and loop.step == 8
    err = capsys.readouterr().err
    assert "has no digest" in err and "loaded unverified" in err
    loop.run_to(LAST)
    assert all(torch.equal(loop.model.state_dict()[k], uninterrupted[k]) for k in uninterrupted)


def test_resume_file_that_is_damaged_is_refused(tmp_path):
    _, newest = interrupted_run(tmp_path)
    random_inside(newest)
    with pytest.raises(ConfigError, match="is damaged .*sha256 mismatch"):
        Loop(tmp_path).state.resume(str(newest))


def test_nan_line_calls_a_checkpoint_intact_only_once_verified(tmp_path):
    _, newest = interrupted_run(tmp_path)
    state = Loop(tmp_path).state
    state.loss_not_finite |= True
    lines = {}
    for label, prepare in (("verified", lambda: None), ("damaged", lambda: random_inside(newest)),
                           ("unverified", lambda: ck.digest_path(newest).unlink())):
        prepare()
        with pytest.raises(Exception) as e:
            state.check_finite()
        lines[label] = str(e.value)
    assert "intact (sha256 verified)" in lines["verified"]
    assert "is damaged" in lines["damaged"] and "intact" not in lines["damaged"]
    assert "could not be verified" in lines["unverified"] and "good" not in lines["unverified"]
