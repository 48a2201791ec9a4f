"""Faults at any moment (issue 11): stop signals in start-up, training and shutdown; a second process on one run
dir; a full disk and a read-only checkpoints dir; a newest checkpoint from another model; sweep.py stopped."""

import errno
import io
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
FAST = ["experiment=quickstart", "trainer.epochs=2", "trainer.log_every_steps=5", "trainer.eval_every_epochs=1",
        "trainer.checkpoint_every_steps=10"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}


def start(args, run_dir):
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={run_dir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)


def run(args, run_dir):
    p = start(args, run_dir)
    out, err = p.communicate(timeout=600)
    return p.returncode, err


def stop_handlers_installed(p) -> bool:
    """train.py's first line ran: the process catches SIGTERM (SigCgt, the signals a process catches; Python
    itself catches only SIGINT). A signal before that line kills the interpreter wherever it is (site, imports):
    no program can answer it, so the start-up cases begin here, not at a fixed delay, which a loaded machine
    stretches past."""
    try:
        status = Path(f"/proc/{p.pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(ln for ln in status.splitlines() if ln.startswith("SigCgt:")).split()[1], 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def wait_for(cond, p=None, timeout=180):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out"
        if p is not None and p.poll() is not None:
            return False
        time.sleep(0.01)
    return True


def weights(run_dir):
    return torch.load(Path(run_dir) / "model_final.pt", weights_only=True)


def assert_same(a, b):
    a, b = weights(a), weights(b)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def one_error_line(err):
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert "Error executing job" not in err, err[-2000:]  # Hydra's preamble: one line means one line
    return lines[0]


def inproc(capsys, args, run_dir):
    """train.py's own entry in this process (ham.cli.main): exit code and stderr. For the faults that are not
    about the process (storage, checkpoints, NaN); signals and the run lock go through real processes."""
    from ham.cli import main

    capsys.readouterr()
    code = main([*args, f"hydra.run.dir={run_dir}"])
    return code, capsys.readouterr().err


@pytest.fixture
def reference(quickstart_fast_run):
    """The session's shared FAST run (tests/conftest.py; in-process, one thread: bit-identical to train.py's)."""
    rd, args = quickstart_fast_run
    assert args == FAST
    return rd


# ------------------------------------------------------------------ signals
def test_stop_signals_at_every_phase_then_rerun_is_bit_identical(tmp_path, reference):
    rd = tmp_path / "victim"
    points = [  # start-up: imports, after Hydra made the dir, while building (config.yaml written)
        (signal.SIGTERM, None, 0.15),
        (signal.SIGUSR1, lambda: (rd / ".hydra").is_dir(), 0),
        (signal.SIGUSR2, lambda: (rd / "config.yaml").is_file(), 0),
    ]
    for sig, ready, delay in points:
        p = start(FAST, rd)
        wait_for(ready or (lambda: stop_handlers_installed(p)), p)
        time.sleep(delay)
        p.send_signal(sig)
        _, err = p.communicate(timeout=300)
        assert p.returncode == 3, err[-2000:]
        line = one_error_line(err)
        assert "before the first step" in line and signal.Signals(sig).name in line, line
        assert not list((rd / "checkpoints").glob("ckpt_*.pt"))
    # training: SIGUSR2 (submitit's pre-timeout signal) goes to the trainer, which checkpoints
    p = start(FAST, rd)
    wait_for(lambda: (rd / "checkpoints" / "ckpt_000000010.pt").is_file(), p)
    p.send_signal(signal.SIGUSR2)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 3 and "checkpoint saved" in err, err[-2000:]
    # start-up of a resume: the checkpoint stays, and the line says so
    p = start(FAST, rd)
    wait_for(lambda: (rd / ".hydra").is_dir() and p.stderr is not None, p)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 3, err[-2000:]
    assert "before the first step" in one_error_line(err)
    if "ckpt_" in err:  # it landed in train(): the line names the checkpoint a requeue resumes from
        assert "is intact and a requeue resumes from it" in err
    # the rest, with a signal after the final save: exit 0, the run is complete
    p = start(FAST, rd)
    wait_for(lambda: (rd / "summary.json").is_file(), p)
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0 and "resumed from" in err, err[-2000:]
    assert_same(reference, rd)


def start_in_terminal_group(args, run_dir):
    """As typed at a terminal: its own process group, so a Ctrl-C (os.killpg) reaches every process of it."""
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={run_dir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT,
                            start_new_session=True)


def test_ctrl_c_mid_run_checkpoints_exits_130_and_the_rerun_is_bit_identical(tmp_path, reference):
    rd = tmp_path / "run"
    p = start_in_terminal_group([*FAST, "trainer.num_workers=1"], rd)  # a loader worker gets the Ctrl-C too
    wait_for(lambda: (rd / "checkpoints" / "ckpt_000000010.pt").is_file(), p)
    os.killpg(p.pid, signal.SIGINT)
    time.sleep(0.01)
    os.killpg(p.pid, signal.SIGINT)  # a copy milliseconds later (torchrun, sweep.py forward it): still one Ctrl-C
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, err[-2000:]
    line = one_error_line(err)
    assert "SIGINT (Ctrl-C)" in line and "checkpoint saved at step" in line and "exit 130" in line, line
    step = int(line.split("checkpoint saved at step ")[1].split(";")[0])
    ckpt = rd / "checkpoints" / f"ckpt_{step:09d}.pt"
    from ham.train.checkpoint import verify_checkpoint

    assert verify_checkpoint(ckpt) and not (rd / "summary.json").exists()
    assert not [q for q in (rd / "checkpoints").iterdir() if "tmp" in q.name]
    code, err = run([*FAST, "trainer.num_workers=1"], rd)
    assert code == 0 and f"resumed from {ckpt}" in err, err[-2000:]
    assert_same(reference, rd)


def test_ctrl_c_at_start_up_is_one_line_exit_130_and_nothing_half_written(tmp_path):
    rd = tmp_path / "run"
    for ready, delay in ((None, 0.15), (lambda: (rd / ".hydra").is_dir(), 0),
                         (lambda: (rd / "config.yaml").is_file(), 0)):
        p = start_in_terminal_group(FAST, rd)
        wait_for(ready or (lambda: stop_handlers_installed(p)), p)
        time.sleep(delay)
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=300)
        assert p.returncode == 130, err[-2000:]
        line = one_error_line(err)
        assert "SIGINT" in line and "before the first step" in line and "exit 130" in line, line
        assert not list((rd / "checkpoints").glob("ckpt_*")) if (rd / "checkpoints").is_dir() else True
        if rd.is_dir():
            assert not [q for q in rd.rglob("*") if ".tmp-" in q.name]


def test_second_ctrl_c_exits_130_at_once(monkeypatch, capsys, request):
    from ham.lifecycle import stop

    exits = []
    monkeypatch.setattr(os, "_exit", lambda code: exits.append(code))
    clock = [100.0]
    monkeypatch.setattr(stop.time, "monotonic", lambda: clock[0])
    monkeypatch.setitem(stop._state, "sigint_at", None)
    monkeypatch.setitem(stop._state, "mode", "startup")
    monkeypatch.setitem(stop._state, "stopped", None)  # an earlier in-process run may have left its stop here
    ts = stop.TrainingStop()
    ts._on_signal(signal.SIGINT, None)
    clock[0] += 0.05
    ts._on_signal(signal.SIGINT, None)  # the forwarded copy of the same Ctrl-C
    ts._on_signal(signal.SIGTERM, None)  # a scheduler's signal never escalates
    assert exits == [] and ts.signum == signal.SIGINT and ts.requested(1)
    clock[0] += stop.SECOND_INTERRUPT_S
    ts._on_signal(signal.SIGINT, None)
    assert exits == [130]
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "second Ctrl-C" in err and "exit 130" in err
    # start-up: the first raises StopRequested, a copy during the unwinding is ignored, a second one exits
    monkeypatch.setitem(stop._state, "sigint_at", None)
    monkeypatch.setitem(stop._state, "stopped", None)
    # start-up means our handler holds SIGTERM (an earlier test in this process may have left another one there:
    # _handler then hands the signal to it, as it does to the trainer's)
    previous = signal.signal(signal.SIGTERM, stop._handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGTERM, previous))
    with pytest.raises(stop.StopRequested):
        stop._handler(signal.SIGINT, None)
    stop._handler(signal.SIGINT, None)
    assert exits == [130]
    clock[0] += stop.SECOND_INTERRUPT_S
    stop._handler(signal.SIGINT, None)
    assert exits == [130, 130]
    monkeypatch.setitem(stop._state, "mode", "exiting")  # the exit code is decided: nothing changes it
    clock[0] += 10
    ts._on_signal(signal.SIGINT, None)
    assert exits == [130, 130]
    assert stop.exit_code(signal.SIGINT) == 130 and stop.exit_code(signal.SIGTERM) == 3


# ------------------------------------------------------------------ one writer per run dir
def test_second_process_on_the_same_run_dir_exits_2_and_changes_nothing(tmp_path):
    rd = tmp_path / "run"
    first = start([*FAST, "trainer.epochs=20"], rd)
    wait_for(lambda: (rd / "metrics.jsonl").is_file(), first)
    before = sorted(p.name for p in (rd / ".hydra").iterdir())
    mtimes = {p: p.stat().st_mtime_ns for p in (rd / ".hydra").iterdir()}
    code, err = run([*FAST, "trainer.epochs=20"], rd)
    assert code == 2
    line = one_error_line(err)
    assert f"pid {first.pid}" in line and "in use" in line
    assert sorted(p.name for p in (rd / ".hydra").iterdir()) == before
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # Hydra's record was not rewritten
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 3, err[-2000:]
    import json

    steps = [json.loads(x)["step"] for x in (rd / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)
    ckpts = sorted((rd / "checkpoints").glob("ckpt_*.pt"))
    assert torch.load(ckpts[-1], weights_only=True)["progress"]["step"] >= steps[-1]
    assert not list((rd / "checkpoints").glob(".*tmp*"))


_HOLDER = """
import sys, time
from ham.lifecycle import runlock
runlock.acquire(sys.argv[1]); print("held", flush=True); time.sleep(600)
"""


def test_run_lock_names_holder_and_a_killed_holder_does_not_block(tmp_path):
    from ham.lifecycle import runlock

    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env={**ENV, "PYTHONPATH": str(ROOT)})
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(runlock.RunDirBusy, match=f"pid {holder.pid}"):
        runlock.acquire(tmp_path)
    holder.kill()  # SIGKILL: no cleanup ran, the lock file stays, the lock does not
    holder.wait()
    assert (tmp_path / runlock.LOCK_NAME).exists()
    assert runlock.acquire(tmp_path) and runlock.holds(tmp_path)
    runlock.release(tmp_path)


def test_temp_cleanup_keeps_a_live_writers_file_and_removes_a_dead_ones(tmp_path):
    from ham.train import checkpoint as ck
    from ham.train.io import temp_path

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        mine = temp_path(tmp_path / "ckpt_000000005.pt")
        live = mine.with_name(mine.name.rsplit("-", 1)[0] + f"-{sleeper.pid}")
        stale = mine.with_name(mine.name.rsplit("-", 1)[0] + f"-{dead.pid}")
        live.write_bytes(b"in flight")
        stale.write_bytes(b"left by a SIGKILL")
        ck.save_checkpoint({"step": 1}, tmp_path, 1)
        assert live.exists() and not stale.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


# ------------------------------------------------------------------ storage
def test_enospc_in_the_writer_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    from ham.errors import StorageError
    from ham.train import io as hio

    target = tmp_path / "ckpt_000000001.pt"
    hio.atomic_torch_save({"w": torch.ones(3)}, target)

    class Full(io.RawIOBase):  # what a full disk does under torch.save: a short write, ENOSPC in the context
        def writable(self):
            return True

        def write(self, b):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: real_save(obj, Full()))
    with pytest.raises(StorageError) as e:
        hio.atomic_torch_save({"w": torch.zeros(1000)}, target)
    assert "No space left on device" in str(e.value) and str(target) in str(e.value) and "\n" not in str(e.value)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_enospc_appending_metrics_names_the_file(tmp_path):
    from ham.errors import StorageError
    from ham.train.sinks import JsonlSink

    sink = JsonlSink(tmp_path / "metrics.jsonl")

    class Full(io.StringIO):
        def write(self, s):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # no file name, as a real stream write

    sink._file = Full()
    with pytest.raises(StorageError) as e:
        sink.log({"train/loss": 1.0}, step=1)
    assert str(tmp_path / "metrics.jsonl") in str(e.value) and "No space left on device" in str(e.value)


def _mount_tmpfs(path, size):
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and tmpfs mounts")


def test_full_disk_then_read_only_checkpoints_then_bit_identical_resume(tmp_path, reference, capsys):
    mnt = tmp_path / "mnt"
    _mount_tmpfs(mnt, "8m")
    rd = mnt / "run"
    try:
        c = next((reference / "checkpoints").glob("ckpt_*.pt")).stat().st_size
        m = (reference / "model_final.pt").stat().st_size
        room = int(2.5 * c)  # two checkpoints fit, the third does not; the start-up check (~5 x model) passes
        assert room > 5.2 * m
        st = os.statvfs(mnt)
        (mnt / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - room))
        code, err = inproc(capsys, FAST, rd)
        assert code == 1
        line = one_error_line(err)
        assert "No space left on device" in line and str(rd) in line, line
        kept = sorted((rd / "checkpoints").glob("ckpt_*.pt"))
        assert [p.name for p in kept] == ["ckpt_000000010.pt", "ckpt_000000020.pt"]
        assert all(torch.load(p, weights_only=True)["progress"]["step"] in (10, 20) for p in kept)
        assert not [p for p in (rd / "checkpoints").iterdir() if "tmp" in p.name]
        (mnt / "filler").unlink()
        # a read-only checkpoints dir: refused before training, nothing changed
        ck = rd / "checkpoints"
        subprocess.run(["mount", "--bind", str(ck), str(ck)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(ck)], check=True)
            code, err = inproc(capsys, FAST, rd)
            assert code == 2
            line = one_error_line(err)
            assert str(ck) in line and "read-only" in line, line
        finally:
            subprocess.run(["umount", str(ck)], check=True)
        assert sorted((rd / "checkpoints").glob("ckpt_*.pt")) == kept
        code, err = inproc(capsys, FAST, rd)
        assert code == 0 and "resumed from" in err and "ckpt_000000020.pt" in err, err[-2000:]
        assert_same(reference, rd)
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_unwritable_run_dir_is_refused_before_anything_exists(tmp_path, capsys):
    mnt = tmp_path / "ro"
    _mount_tmpfs(mnt, "1m")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        code, err = inproc(capsys, FAST, mnt / "run")
        assert code == 2 and "read-only" in one_error_line(err)
        assert not (mnt / "run").exists()
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_unreadable_data_dir_is_one_line(tmp_path, monkeypatch):
    from ham.config import compose, validate
    from ham.errors import ConfigError

    cfg = compose(["dataset=cifar100", f"data_dir={tmp_path}"])
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    with pytest.raises(ConfigError, match="data_dir=.* is not readable"):
        validate(cfg, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ mismatched checkpoints
def _other_model(state):
    state["model"] = {f"other.{k}": v.reshape(-1)[:1].clone() for k, v in state["model"].items()}
    return state


def test_newest_checkpoint_from_another_model_falls_back_then_bit_identical(tmp_path, reference, capsys):
    rd = tmp_path / "run"
    (rd / "checkpoints").mkdir(parents=True)
    shutil.copy(reference / "config.yaml", rd / "config.yaml")
    ckpts = sorted((reference / "checkpoints").glob("ckpt_*.pt"))
    older = ckpts[0]  # the reference keeps its last two: an in-run one and the final one
    shutil.copy(older, rd / "checkpoints" / older.name)
    step = torch.load(older, weights_only=True)["progress"]["step"]
    newer = rd / "checkpoints" / f"ckpt_{step + 1:09d}.pt"
    torch.save(_other_model(torch.load(older, weights_only=True)), newer)
    code, err = inproc(capsys, FAST, rd)
    assert code == 0, err[-2000:]
    assert f"checkpoint {newer.name} is unusable" in err and f"resumed from {rd / 'checkpoints' / older.name}" in err
    assert_same(reference, rd)


def test_no_fitting_checkpoint_and_resume_file_from_another_model_are_one_line(tmp_path, reference, capsys):
    bad = _other_model(torch.load(next((reference / "checkpoints").glob("ckpt_*.pt")), weights_only=True))
    rd = tmp_path / "run"
    (rd / "checkpoints").mkdir(parents=True)
    torch.save(bad, rd / "checkpoints" / "ckpt_000000010.pt")
    code, err = inproc(capsys, FAST, rd)
    assert code == 2
    line = one_error_line(err)
    assert "ckpt_000000010.pt" in line and "resume=never" in line and "resume=PATH" in line
    # resume=FILE from another model, no config beside it: refused at load, the new run dir is removed again
    loose = tmp_path / "loose.pt"
    torch.save(bad, loose)
    code, err = inproc(capsys, [*FAST, f"resume={loose}"], tmp_path / "fresh")
    assert code == 2 and "cannot be used for this run" in one_error_line(err)
    assert not (tmp_path / "fresh").exists()
    # ... with the other run's config.yaml beside it: refused before anything is created
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    (other / "config.yaml").write_text((reference / "config.yaml").read_text().replace("small_cnn", "mlp", 1))
    torch.save(bad, other / "checkpoints" / "ckpt_000000010.pt")
    code, err = inproc(capsys, [*FAST, f"resume={other / 'checkpoints' / 'ckpt_000000010.pt'}"],
                       tmp_path / "fresh2")
    assert code == 2 and "model" in one_error_line(err)
    assert not (tmp_path / "fresh2").exists()


def test_damaged_checkpoints_of_a_real_run_stop_with_one_line_or_recover_bit_for_bit(tmp_path, reference):
    """The issue's case: 4 KiB of random bytes inside the newest checkpoint (size kept) used to load silently."""
    rd = tmp_path / "run"
    shutil.copytree(reference / "checkpoints", rd / "checkpoints")  # an in-run checkpoint and the final one
    shutil.copy(reference / "config.yaml", rd / "config.yaml")
    older, newest = sorted((rd / "checkpoints").glob("ckpt_*.pt"))

    def damage(p):
        data = bytearray(p.read_bytes())
        data[len(data) // 2:len(data) // 2 + 4096] = os.urandom(4096)
        p.write_bytes(bytes(data))
        return bytes(data)

    damage(older)
    damaged = damage(newest)
    names = sorted(q.name for q in (rd / "checkpoints").iterdir())
    code, err = run(FAST, rd)  # none intact: exit 2, one line naming both, nothing renamed or deleted
    assert code == 2
    line = one_error_line(err)
    assert older.name in line and newest.name in line and "sha256 mismatch" in line and "resume=never" in line
    assert sorted(q.name for q in (rd / "checkpoints").iterdir()) == names
    shutil.copy(reference / "checkpoints" / older.name, older)  # the older one intact again
    code, err = run(FAST, rd)
    assert code == 0, err[-2000:]
    warn = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and newest.name in warn[0] and f"resuming from {older.name}" in warn[0], err[-2000:]
    assert f"resumed from {older}" in err
    assert newest.with_name(newest.name + ".damaged").read_bytes() == damaged  # kept for the user
    assert_same(reference, rd)


def test_nan_message_says_when_there_is_no_checkpoint(tmp_path, capsys):
    code, err = inproc(capsys, [*FAST, "optimizer.lr=1e6", "ham.alpha=0", "ham.beta=0", "ham.clamp=null",
                                "schedule=constant", "trainer.checkpoint_every_steps=1000"], tmp_path / "run")
    assert code == 1
    line = one_error_line(err)
    assert "NaN" in line and "no checkpoint was written yet" in line and "intact" not in line


# ------------------------------------------------------------------ CIFAR-100 meta
class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_meta_reader_refuses_code_and_reads_plain_data(tmp_path):
    from ham.data.datasets import _load_plain_pickle

    good = pickle.dumps({"fine_label_names": ["apple", "bear"], "coarse_label_names": ["fruit"]}, protocol=2)
    assert _load_plain_pickle(io.BytesIO(good))["fine_label_names"] == ["apple", "bear"]
    evil = pickle.dumps({"fine_label_names": _Evil()})
    os.chdir(tmp_path)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _load_plain_pickle(io.BytesIO(evil))
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------ sweep.py
def _children(pid):
    try:
        return [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
                for c in (t / "children").read_text().split()]
    except OSError:
        return []


@pytest.mark.slow  # ~2-4 min: two sweeps, two trainings each; stop signals to train.py itself: the tests above
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_to_sweep_stops_its_child_and_rerun_finishes(tmp_path, sig):
    """SIGTERM to sweep.py alone -> forwarded, exit 3; Ctrl-C as a terminal sends it (the whole process group,
    sweep.py and train.py at once, plus sweep.py's forwarded copy) -> one Ctrl-C for train.py, exit 130."""
    cmd = [sys.executable, str(ROOT / "sweep.py"), "experiment=quickstart", "trainer.epochs=8",
           "trainer.log_every_steps=5", "--alpha", "20", "--beta", "0.001", "--seeds", "0",
           "--root", str(tmp_path), "--name", "s"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT,
                         start_new_session=True)
    wait_for(lambda: any((tmp_path / "s").glob("*/metrics.jsonl")), p)
    kids = _children(p.pid)
    assert kids
    if sig == signal.SIGINT:
        os.killpg(p.pid, sig)
    else:
        p.send_signal(sig)
    _, err = p.communicate(timeout=300)
    assert p.returncode == (130 if sig == signal.SIGINT else 3), err[-2000:]
    assert "Traceback" not in err and "checkpoint saved" in err, err[-2000:]
    for k in kids:
        with pytest.raises(ProcessLookupError):
            os.kill(k, 0)
    job = next((tmp_path / "s").glob("*/checkpoints"))
    assert list(job.glob("ckpt_*.pt")) and not (job.parent / "summary.json").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert again.returncode == 0 and "resumed from" in again.stderr, again.stderr[-2000:]
    assert (job.parent / "summary.json").is_file()
