"""Metrics (L1, sign flips), sinks (jsonl truncation, progress bar), plots."""

import json

import torch

from ham.train.metrics import SignTracker, l1_norm
from ham.train.plots import plot_curves
from ham.train.reporting import JsonlSink, ProgressBar, format_summary_table


def test_l1_norm_is_mean_abs():
    a, b = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, 3.0, -4.0, 1.0]])
    assert l1_norm([a, b]) == (1 + 2 + 0 + 3 + 4 + 1) / 6


def test_sign_tracker_counts_strict_flips_only():
    w = torch.tensor([1.0, -1.0, 2.0, 0.5, -0.3, 0.0])
    t = SignTracker([w])
    assert all(s.dtype == torch.int8 and s.element_size() == 1 for s in t.init + t.prev)
    w.copy_(torch.tensor([-1.0, -1.0, 0.0, 0.5, 0.3, 1.0]))  # flips: idx 0 and 4; idx 2 -> 0 and idx 5 from 0: no
    assert t.update() == {"train/sign_flips": 2 / 6, "train/sign_flips_init": 2 / 6}
    w.copy_(torch.tensor([1.0, -1.0, 0.0, 0.5, 0.3, 1.0]))  # idx 0 flips back
    out = t.update()
    assert out["train/sign_flips"] == 1 / 6 and out["train/sign_flips_init"] == 1 / 6


def test_sign_tracker_state_round_trip():
    w = torch.randn(100)
    t = SignTracker([w])
    w.neg_()
    sd = t.state_dict()
    t2 = SignTracker([w])  # a fresh tracker would call everything unflipped...
    t2.load_state_dict(sd)  # ...but the restored one remembers the original signs
    assert t2.update()["train/sign_flips_init"] == (w != 0).float().mean().item()


def test_jsonl_truncates_lines_after_resume_step(tmp_path):
    p = tmp_path / "m.jsonl"
    s = JsonlSink(p)
    for step in (10, 20, 30):
        s.log({"step": step, "train/loss": 1.0})
    with open(p, "a") as f:
        f.write('{"step": 40, "trunc')  # a line cut by a crash
    JsonlSink(p, resume_step=20)
    assert [json.loads(line)["step"] for line in p.read_text().splitlines()] == [10, 20]


def test_progress_without_tty_prints_plain_lines(capsys):
    bar = ProgressBar(total=100, initial=0, enabled=True, tty=False)
    for _ in range(100):
        bar.update(1)
    err = capsys.readouterr().err
    assert "\r" not in err and 15 <= err.count("step ") <= 21


def test_plot_and_summary_table(tmp_path):
    p = tmp_path / "m.jsonl"
    rows = [{"step": i, "train/loss": 1.0 / i, "lr": 0.1, "train/l1_norm": 0.5} for i in range(1, 20)]
    rows.append({"step": 19, "val/top1": 90.0})
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "c.png"
    assert plot_curves(p, out) and out.stat().st_size > 1000
    table = format_summary_table({"val/top1": 91.5, "train/loss": 0.1, "steps": 19})
    assert "91.50" in table and "steps" in table
