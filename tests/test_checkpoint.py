"""Atomic checkpoints, keep-last-two, corrupt fallback, weights_only safety, RNG round trip."""

import random

import numpy as np
import pytest
import torch

from ham.train import checkpoint as ck


def test_keep_last_two_and_latest_loads(tmp_path):
    for step in (10, 20, 30):
        ck.save_checkpoint({"step": step, "w": torch.full((3,), float(step))}, tmp_path, step, keep=2)
    names = [p.name for p in ck.list_checkpoints(tmp_path)]
    assert names == ["ckpt_000000020.pt", "ckpt_000000030.pt"]
    state, path = ck.load_latest_checkpoint(tmp_path)
    assert state["step"] == 30 and path.name == names[-1]


def test_crash_while_writing_leaves_previous_intact(tmp_path, monkeypatch):
    ck.save_checkpoint({"step": 1}, tmp_path, 1)

    def dying_save(obj, f):
        f.write(b"partial bytes")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint({"step": 2}, tmp_path, 2)
    monkeypatch.undo()
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["ckpt_000000001.pt"]
    assert not list(tmp_path.glob(".*tmp*"))
    assert ck.load_latest_checkpoint(tmp_path)[0]["step"] == 1


def test_corrupt_latest_falls_back_with_warning(tmp_path, capsys):
    ck.save_checkpoint({"step": 1}, tmp_path, 1)
    p2 = ck.save_checkpoint({"step": 2}, tmp_path, 2)
    p2.write_bytes(p2.read_bytes()[:50])
    state, path = ck.load_latest_checkpoint(tmp_path)
    assert state["step"] == 1
    err = capsys.readouterr().err
    assert "ckpt_000000002.pt is corrupt" in err and "falling back to ckpt_000000001.pt" in err


def test_all_corrupt_is_a_clear_error(tmp_path):
    p = ck.save_checkpoint({"step": 1}, tmp_path, 1)
    p.write_bytes(b"garbage")
    with pytest.raises(ck.AllCheckpointsCorrupt, match="every checkpoint"):
        ck.load_latest_checkpoint(tmp_path)


def test_no_checkpoints_returns_none(tmp_path):
    assert ck.load_latest_checkpoint(tmp_path / "nothing") is None


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_loading_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "ckpt_000000001.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(Exception):
        ck.load_checkpoint_file(path)


def test_rng_round_trip_weights_only(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.rand(), torch.rand(1)
    state = ck.capture_rng_state()
    ck.save_checkpoint({"rng": state}, tmp_path, 1)
    want = (random.random(), np.random.rand(), torch.rand(3))
    random.random(), np.random.rand(5), torch.rand(7)  # move all generators on
    ck.restore_rng_state(ck.load_latest_checkpoint(tmp_path)[0]["rng"])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == want[0] and got[1] == want[1] and torch.equal(got[2], want[2])
