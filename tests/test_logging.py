"""Sinks (metrics.jsonl, W&B offline/disabled, progress output, fan-out, summary table) and plots."""

import io
import json
import struct
from pathlib import Path

import pytest
import torch

from ham.errors import ConfigError
from ham.train.plots import compare_runs, plot_curves, plot_layer_sparsity
from ham.train.sinks import (
    JsonlSink,
    MultiSink,
    ProgressBar,
    WandbSink,
    format_summary_table,
    make_sinks,
    read_jsonl,
)


def _strict_rows(path: Path) -> list[dict]:
    def no_nan(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return [json.loads(line, parse_constant=no_nan) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ jsonl
def test_jsonl_appends_one_strict_json_object_per_call(tmp_path):
    p = tmp_path / "sub" / "metrics.jsonl"
    s = JsonlSink(p)
    s.log({"train/loss": torch.tensor(0.5), "lr": 0.1, "epoch": 0.25}, step=10)
    assert _strict_rows(p) == [{"step": 10, "train/loss": 0.5, "lr": 0.1, "epoch": 0.25}]  # flushed already
    s.log({"train/loss": float("nan"), "val/top1": 12.5}, step=20)
    s.finish()
    JsonlSink(p).log({"train/loss": 0.25}, step=30)  # reopening appends
    rows = _strict_rows(p)
    assert [r["step"] for r in rows] == [10, 20, 30]
    assert rows[1]["train/loss"] is None and rows[1]["val/top1"] == 12.5  # NaN is written as null


def test_truncate_after_drops_later_rows_and_a_torn_line(tmp_path):
    p = tmp_path / "metrics.jsonl"
    s = JsonlSink(p)
    for step in (10, 20, 30):
        s.log({"train/loss": 1.0}, step)
    s.finish()
    with open(p, "a") as f:
        f.write('{"step": 40, "train/lo')  # the crash cut this line
    assert JsonlSink(p).truncate_after(20) == 2
    assert [r["step"] for r in _strict_rows(p)] == [10, 20]
    assert JsonlSink(tmp_path / "absent.jsonl").truncate_after(5) == 0


def test_truncate_while_open_then_keep_logging(tmp_path):
    p = tmp_path / "metrics.jsonl"
    s = JsonlSink(p)
    s.log({"a": 1}, 1)
    s.log({"a": 2}, 2)
    s.truncate_after(1)
    s.log({"a": 3}, 2)
    assert [(r["step"], r["a"]) for r in read_jsonl(p)] == [(1, 1), (2, 3)]


def test_make_sinks_main_rank_writes_other_ranks_touch_nothing(tmp_path):
    (tmp_path / "main").mkdir()
    old = tmp_path / "main" / "metrics.jsonl"
    old.write_text('{"step": 5}\n{"step": 50}\n')
    main = make_sinks(tmp_path / "main", is_main=True, resume_step=5)
    other = make_sinks(tmp_path / "other", is_main=False, resume_step=5)
    for sinks in (main, other):
        sinks.log({"train/loss": 2.0}, step=10)
        sinks.log({"val/top1": 50.0}, step=10)
        sinks.summary({"val/top1": 50.0})
        sinks.finish()
        assert sinks.last == {"step": 10, "train/loss": 2.0, "val/top1": 50.0} and sinks.wandb_id is None
    assert [r["step"] for r in read_jsonl(old)] == [5, 10, 10]
    assert not (tmp_path / "other").exists()


def test_multisink_fans_out_to_every_sink():
    class Recorder:
        def __init__(self):
            self.calls = []

        def log(self, metrics, step):
            self.calls.append(("log", dict(metrics), step))

        def summary(self, values):
            self.calls.append(("summary", dict(values)))

        def finish(self, exit_code=0):
            self.calls.append(("finish", exit_code))

    a, b = Recorder(), Recorder()
    m = MultiSink([a, b])
    m.log({"x": 1.0}, 3)
    m.summary({"y": 2})
    m.finish(1)
    assert a.calls == b.calls == [("log", {"x": 1.0}, 3), ("summary", {"y": 2}), ("finish", 1)]


# ------------------------------------------------------------------------------------------------ W&B
def _read_wandb_records(path: Path):
    """Records of an offline run's .wandb file: a 7-byte header, then a LevelDB-style log (32 KiB blocks, chunk
    header = crc32 u32, length u16, type u8; type 1 full, 2 first, 3 middle, 4 last) of wandb Record protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too short for a header: zero padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 2):
            pending = chunk
        elif kind in (3, 4):
            pending += chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(pending)
            records.append(rec)
    return records


def _items(items) -> dict:
    return {(it.key or "/".join(it.nested_key)): json.loads(it.value_json) for it in items}


@pytest.fixture
def offline_env(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_default_dir"))  # anything written elsewhere shows up
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_wandb_offline_run_holds_the_logged_metrics_and_resumes_by_id(offline_env, tmp_path):
    cfg = {"ham": {"alpha": 200.0, "beta": 0.001}, "seed": 3}
    sink = WandbSink(cfg, project="ham-test", tags=["t"], name="unit", mode="online", dir=tmp_path / "run")
    assert sink.mode == "offline"  # WANDB_MODE wins over the configured mode
    for step in (1, 2, 3):
        sink.log({"train/loss": 1.0 / step, "lr": 0.1, "step": step}, step=step)
    sink.summary({"val/top1": 42.5, "sparsity_per_layer": {"conv1": 0.5}})
    sink.finish()
    sink.finish()  # idempotent
    run_dir = sink.run_dir
    assert run_dir.parent == tmp_path / "run" / "wandb" and run_dir.name.endswith(sink.id)
    records = _read_wandb_records(run_dir / f"run-{sink.id}.wandb")
    history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    assert [(h["_step"], h["train/loss"], h["lr"]) for h in history] == [(1, 1.0, 0.1), (2, 0.5, 0.1),
                                                                         (3, 1 / 3, 0.1)]
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(_items(r.summary.update))
    assert summary["val/top1"] == 42.5
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    config = _items(run.config.update)
    assert config["ham"] == {"alpha": 200.0, "beta": 0.001} and config["seed"] == 3
    assert run.run_id == sink.id and run.display_name == "unit" and list(run.tags) == ["t"]

    again = WandbSink(cfg, project="ham-test", mode="offline", dir=tmp_path / "run", resume_id=sink.id)
    again.log({"train/loss": 0.1}, step=4)
    again.finish()
    assert again.id == sink.id
    resumed = _read_wandb_records(again.run_dir / f"run-{sink.id}.wandb")
    assert [_items(r.history.item)["train/loss"] for r in resumed if r.WhichOneof("record_type") == "history"] \
        == [0.1]
    assert not (tmp_path / "wandb_default_dir").exists()


def test_wandb_disabled_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    sink = WandbSink({"a": 1}, project="p", mode="disabled", dir=tmp_path / "run", resume_id="keepme")
    sink.log({"x": 1.0}, step=1)
    sink.summary({"x": 1.0})
    sink.finish()
    assert sink.run is None and sink.run_dir is None and sink.id == "keepme"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the environment can switch W&B off too
    assert WandbSink({}, project="p", mode="offline", dir=tmp_path / "run").run is None
    assert not (tmp_path / "run").exists()


def test_wandb_bad_mode_is_a_one_line_config_error(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.raises(ConfigError) as err:
        WandbSink({}, project="p", mode="sometimes", dir=tmp_path)
    msg = str(err.value)
    assert "logger.wandb.mode" in msg and "offline" in msg and "\n" not in msg


# ------------------------------------------------------------------------------------------------ progress
def test_progress_without_tty_prints_a_few_plain_lines():
    out = io.StringIO()
    bar = ProgressBar(total=1000, initial=0, enabled=True, tty=False, file=out)
    for i in range(1000):
        bar.update(1, postfix={"loss": 1.0 / (i + 1)} if i % 50 == 0 else None)
    bar.close()
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and len(lines) == 20  # every 5%
    assert lines[0].startswith("train 50/1000 (5%)") and "loss=" in lines[0]
    assert lines[-1].startswith("train 1000/1000 (100%)")


def test_progress_resumed_midway_and_big_jumps():
    out = io.StringIO()
    bar = ProgressBar(total=100, initial=40, tty=False, file=out)
    bar.update(3)  # 43: below the next 5% mark (45)
    bar.update(30)  # 73: crosses several marks, prints once
    bar.update(27)
    assert [ln.split()[1] for ln in out.getvalue().splitlines()] == ["73/100", "100/100"]


def test_progress_disabled_prints_nothing_and_tty_uses_tqdm():
    quiet = io.StringIO()
    bar = ProgressBar(total=10, enabled=False, tty=True, file=quiet)
    bar.update(10)
    bar.close()
    assert quiet.getvalue() == ""
    term = io.StringIO()
    bar = ProgressBar(total=10, tty=True, file=term)
    bar.update(5, postfix={"loss": 0.5})
    bar.close()
    assert "\r" in term.getvalue() and "5/10" in term.getvalue()


# ------------------------------------------------------------------------------------------------ table
def test_summary_table_is_aligned_and_skips_missing_keys(tmp_path):
    table = format_summary_table({"val/top1": 91.5, "train/loss": 0.1234567, "steps": 19, "val/top5": None,
                                  "train/sign_flips_init": 0.031, "sparsity": 0.9, "wall_time_s": 3725.0,
                                  "train/images_per_s": 1234.4}, run_dir=tmp_path)
    lines = table.splitlines()
    body = lines[1:-2]
    assert lines[0] == lines[-2] and set(lines[0]) == {"="}
    assert len({len(ln) for ln in body}) == 1  # aligned
    assert [ln.split("  ")[0].strip() for ln in body] == ["train loss", "val top-1 (%)", "sign flips since init",
                                                          "sparsity", "steps", "wall time (training, eval, checkpoints)",
                                                          "train images/s (last log interval)"]
    assert "0.1235" in table and "91.50" in table and "3.10%" in table and "1:02:05" in table
    assert lines[-1] == f"run dir: {tmp_path}"


# ------------------------------------------------------------------------------------------------ plots
def _is_png(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _write_rows(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_plot_curves_from_a_small_jsonl_with_gaps(tmp_path):
    rows = [{"step": i, "epoch": i / 10, "train/loss": 1.0 / i, "lr": 0.1, "train/l1_norm": 0.5,
             "train/sign_flips": 0.01, "sparsity": 0.0} for i in range(1, 20)]
    rows += [{"step": 10, "val/top1": 40.0}, {"step": 19, "val/top1": 90.0}, {"step": 20, "train/loss": None}]
    p = _write_rows(tmp_path / "metrics.jsonl", rows)
    with open(p, "a") as f:
        f.write('{"step": 21, "tr')
    assert plot_curves(p, tmp_path / "curves.png") and _is_png(tmp_path / "curves.png")


def test_plots_with_nothing_to_draw_write_nothing(tmp_path):
    p = _write_rows(tmp_path / "metrics.jsonl", [{"step": 1, "epoch": 0.1}])
    assert not plot_curves(p, tmp_path / "a.png")
    assert not plot_curves(tmp_path / "missing.jsonl", tmp_path / "b.png")
    assert not plot_layer_sparsity({}, tmp_path / "c.png")
    assert not compare_runs([tmp_path], tmp_path / "d.png")
    assert not list(tmp_path.glob("*.png"))


def test_layer_sparsity_and_run_comparison(tmp_path):
    assert plot_layer_sparsity({"conv1": 0.5, "layer1.0.conv1": 0.9, "fc": 0.2}, tmp_path / "layers.png")
    assert _is_png(tmp_path / "layers.png")
    for name, top in (("alpha0", 50.0), ("alpha200", 60.0)):
        _write_rows(tmp_path / name / "metrics.jsonl",
                    [{"step": s, "val/top1": top + s} for s in (100, 200, 300)] + [{"step": 300, "lr": 0.1}])
    (tmp_path / "empty").mkdir()
    runs = [tmp_path / "alpha0", tmp_path / "alpha200", tmp_path / "empty"]
    assert compare_runs(runs, tmp_path / "cmp.png") and _is_png(tmp_path / "cmp.png")


def test_to_jsonable_handles_tensors_numpy_omegaconf_and_nonfinite():
    import numpy as np
    from omegaconf import OmegaConf

    from ham.train.sinks import to_jsonable

    cfg = OmegaConf.create({"a": {"b": [1, 2.5]}, "c": "${a.b}", "p": None})
    value = {"cfg": cfg, "t": torch.tensor([1.0, float("inf")]), "n": np.float32(0.5), "path": Path("/x"),
             "flag": True}
    out = to_jsonable(value)
    assert out == {"cfg": {"a": {"b": [1, 2.5]}, "c": [1, 2.5], "p": None}, "t": [1.0, None], "n": 0.5,
                   "path": "/x", "flag": True}
    json.dumps(out, allow_nan=False)
