"""Atomic checkpoints (real SIGKILL mid-write), retention, corrupt fallback, weights_only safety, RNG round trip."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ham.train import checkpoint as ck

ROOT = Path(__file__).resolve().parents[1]


def _names(d):
    return [p.name for p in ck.list_checkpoints(d)]


def test_keep_last_two_and_latest_loads(tmp_path):
    for step in (10, 20, 30):
        ck.save_checkpoint({"step": step, "w": torch.full((3,), float(step))}, tmp_path, step, keep=2)
    assert _names(tmp_path) == ["ckpt_000000020.pt", "ckpt_000000030.pt"]
    state, path = ck.load_latest_checkpoint(tmp_path)
    assert state["step"] == 30 and path.name == "ckpt_000000030.pt"
    assert torch.equal(state["w"], torch.full((3,), 30.0))
    with pytest.raises(ValueError, match="keep"):
        ck.save_checkpoint({}, tmp_path, 40, keep=0)


def test_order_is_by_step_number_not_by_name(tmp_path):
    for step in (999_999_999, 1_000_000_000):  # the second name has 10 digits
        ck.save_checkpoint({"step": step}, tmp_path, step)
    assert ck.load_latest_checkpoint(tmp_path)[0]["step"] == 1_000_000_000


def test_saving_an_older_step_drops_the_abandoned_newer_ones(tmp_path):
    for step in (10, 20, 30):
        ck.save_checkpoint({"step": step}, tmp_path, step, keep=3)
    ck.save_checkpoint({"step": 25}, tmp_path, 25, keep=2)  # resumed from step 20 (30 was corrupt / abandoned)
    assert _names(tmp_path) == ["ckpt_000000020.pt", "ckpt_000000025.pt"]
    assert ck.load_latest_checkpoint(tmp_path)[0]["step"] == 25


_KILLED_WRITER = textwrap.dedent("""
    import os, sys, time, torch
    from ham.train import checkpoint as ck
    ready = sys.argv[2]
    def stuck_fsync(fd):  # bytes are written, not yet synced or renamed: the worst moment to die
        open(ready, "w").close()
        time.sleep(600)
    os.fsync = stuck_fsync
    ck.save_checkpoint({"step": 2, "w": torch.ones(100_000)}, sys.argv[1], 2)
""")


def test_sigkill_while_writing_leaves_previous_intact(tmp_path):
    ck.save_checkpoint({"step": 1}, tmp_path, 1)
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path), str(ready)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, "writer exited early"
            assert time.monotonic() < deadline, "writer never reached fsync"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    leftovers = list(tmp_path.glob(".ckpt_*tmp*"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the partial file is there ...
    assert _names(tmp_path) == ["ckpt_000000001.pt"]  # ... but never listed or loaded
    assert ck.load_latest_checkpoint(tmp_path)[0]["step"] == 1
    ck.save_checkpoint({"step": 2}, tmp_path, 2)  # the next save sweeps it away
    assert not list(tmp_path.glob(".ckpt_*tmp*"))


def test_error_while_writing_removes_temp_file(tmp_path, monkeypatch):
    ck.save_checkpoint({"step": 1}, tmp_path, 1)

    def dying_save(obj, f):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint({"step": 2}, tmp_path, 2)
    monkeypatch.undo()
    assert _names(tmp_path) == ["ckpt_000000001.pt"]
    assert not list(tmp_path.glob(".*tmp*"))


def test_corrupt_latest_falls_back_with_warning(tmp_path, capsys):
    ck.save_checkpoint({"step": 1}, tmp_path, 1)
    p2 = ck.save_checkpoint({"step": 2, "w": torch.zeros(1000)}, tmp_path, 2)
    p2.write_bytes(p2.read_bytes()[:300])  # truncated
    state, path = ck.load_latest_checkpoint(tmp_path)
    assert state["step"] == 1 and path.name == "ckpt_000000001.pt"
    err = capsys.readouterr().err
    assert "checkpoint ckpt_000000002.pt is corrupt (" in err and "falling back to ckpt_000000001.pt" in err


def test_all_corrupt_is_a_clear_error(tmp_path, capsys):
    for step in (1, 2):
        ck.save_checkpoint({"step": step}, tmp_path, step).write_bytes(b"garbage")
    with pytest.raises(ck.AllCheckpointsCorrupt, match="every checkpoint .* is corrupt"):
        ck.load_latest_checkpoint(tmp_path)
    assert capsys.readouterr().err.count("is corrupt") == 2


def test_no_checkpoints_returns_none(tmp_path):
    assert ck.load_latest_checkpoint(tmp_path / "nothing") is None
    assert ck.load_latest_checkpoint(tmp_path) is None


class Evil:
    """Unpickling this would create a file (stands in for arbitrary code)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_weights_only_refuses_pickled_objects_and_falls_back(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    ck.save_checkpoint({"step": 1}, tmp_path, 1)
    torch.save({"step": 2, "x": Evil(str(marker))}, ck.checkpoint_path(tmp_path, 2))
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        ck.load_checkpoint_file(ck.checkpoint_path(tmp_path, 2))
    state, _ = ck.load_latest_checkpoint(tmp_path)
    assert state["step"] == 1 and "ckpt_000000002.pt is corrupt" in capsys.readouterr().err
    assert not marker.exists()
    torch.load(ck.checkpoint_path(tmp_path, 2), weights_only=False)  # the marker is a working detector
    assert marker.exists()


def test_rng_round_trip_weights_only(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.rand(), torch.rand(1)
    random.gauss(0, 1), np.random.standard_normal()  # leave cached gaussians in both states
    state = ck.capture_rng_state()
    ck.save_checkpoint({"rng": state}, tmp_path, 1)
    draws = lambda: (random.random(), random.gauss(0, 1), np.random.rand(3), np.random.standard_normal(),
                     torch.rand(3), torch.randn(2))
    want = draws()
    draws(), draws()  # move all generators on
    ck.restore_rng_state(ck.load_latest_checkpoint(tmp_path)[0]["rng"])
    got = draws()
    assert got[:2] == want[:2] and np.array_equal(got[2], want[2]) and got[3] == want[3]
    assert torch.equal(got[4], want[4]) and torch.equal(got[5], want[5])


# ------------------------------------------------------------------ digests (issue 18 item 2)
def test_every_checkpoint_has_a_sha256sum_digest_and_retention_removes_it_too(tmp_path):
    import hashlib

    for step in (1, 2, 3):
        ck.save_checkpoint({"step": step, "w": torch.rand(100)}, tmp_path, step, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt_000000002.pt", "ckpt_000000002.pt.sha256", "ckpt_000000003.pt", "ckpt_000000003.pt.sha256"]
    p = ck.checkpoint_path(tmp_path, 3)
    assert ck.digest_path(p).read_text() == f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
    assert ck.verify_checkpoint(p) is True
    ck.digest_path(p).unlink()
    assert ck.verify_checkpoint(p) is False  # no digest: unverified, not damaged


def test_digest_is_written_before_the_rename(tmp_path, monkeypatch):
    """A crash between the digest and the rename leaves the old file verifying (same step) or a digest without a
    checkpoint (new step, removed by the next save)."""
    old = ck.save_checkpoint({"w": torch.zeros(10)}, tmp_path, 5)
    old_bytes = old.read_bytes()

    real_replace = os.replace

    def crash(src, dst):
        if str(dst).endswith(".pt"):
            raise KeyboardInterrupt  # the process dies just before the checkpoint's rename
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    for step in (5, 6):
        with pytest.raises(KeyboardInterrupt):
            ck.save_checkpoint({"w": torch.ones(10)}, tmp_path, step)
    monkeypatch.undo()
    assert old.read_bytes() == old_bytes and ck.verify_checkpoint(old)
    assert not ck.checkpoint_path(tmp_path, 6).exists() and ck.digest_path(ck.checkpoint_path(tmp_path, 6)).exists()
    ck.save_checkpoint({"w": torch.ones(10)}, tmp_path, 5)  # the same step again: one digest line, the new one
    assert len(ck.digest_path(old).read_text().splitlines()) == 1 and ck.verify_checkpoint(old)
    assert not ck.digest_path(ck.checkpoint_path(tmp_path, 6)).exists()  # the orphan digest is gone


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "bad_digest_file"])
def test_loader_falls_back_past_a_file_that_does_not_match_its_digest(tmp_path, capsys, damage):
    ck.save_checkpoint({"step": 1}, tmp_path, 1)
    p2 = ck.save_checkpoint({"step": 2, "w": torch.zeros(10_000)}, tmp_path, 2)
    data = bytearray(p2.read_bytes())
    if damage == "flip":  # inside a tensor's bytes: torch.load alone would not notice
        data[len(data) // 2] ^= 0xFF
        p2.write_bytes(bytes(data))
        assert torch.load(p2, weights_only=True)["step"] == 2
    elif damage == "truncate":
        p2.write_bytes(bytes(data[:100]))
    elif damage == "empty":
        p2.write_bytes(b"")
    else:
        ck.digest_path(p2).write_text("not a digest\n")
    with pytest.raises(ck.CheckpointDamaged):
        ck.load_checkpoint_file(p2)
    state, path = ck.load_latest_checkpoint(tmp_path)
    assert state["step"] == 1 and "ckpt_000000002.pt is corrupt" in capsys.readouterr().err
