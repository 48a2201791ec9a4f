"""One thread per test process and per subprocess it starts (train.py, torchrun ranks, examples), unless a test
is about threads (mark it `threads`: it gets the machine's threads back for its duration).

Two cores run the suite (CI sets OMP_NUM_THREADS=2): every process with several intra-op threads oversubscribes
them as soon as two processes run at once (a torchrun pair, a test and its subprocess), which costs 4-9x.
Set here, before torch is imported, so the in-process default and every child's environment agree.

So the suite runs its test processes side by side instead: pytest-xdist, `-n auto` (pyproject's addopts: one
worker per core, at most 4) with `--dist loadgroup`: tests that share a module- or session-scoped fixture of
ours (a trained run, written ffcv files) run on one worker, so each is built once. `-n 0` runs in-process (pdb)."""

import os

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "NUMEXPR_NUM_THREADS": "1"}
_ORIGINAL = {k: os.environ.get(k) for k in ONE_THREAD}
os.environ.update(ONE_THREAD)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "threads: a test about threads: runs with the machine's default threads")


def pytest_xdist_auto_num_workers(config):
    return max(1, min(4, len(os.sched_getaffinity(0))))


def pytest_collection_modifyitems(config, items):
    """Tests using one of our shared (module/session) fixtures go to one worker: the fixture's group."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        for name in getattr(item, "fixturenames", ()):
            defs = info.name2fixturedefs.get(name) if info else None
            d = defs[-1] if defs else None
            if d is None or d.scope not in ("session", "package", "module", "class"):
                continue
            if not getattr(d.func, "__module__", "").startswith(("conftest", "test_", "tests")):
                continue  # pytest's own (tmp_path_factory, ...)
            group = name if d.scope == "session" else item.module.__name__
            item.add_marker(pytest.mark.xdist_group(group))
            break


@pytest.fixture(autouse=True)
def _threads(request, monkeypatch):
    if request.node.get_closest_marker("threads") is None:
        yield
        return
    for k, v in _ORIGINAL.items():
        if v is None:
            monkeypatch.delenv(k, raising=False)
        else:
            monkeypatch.setenv(k, v)
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(1)


# ---------------------------------------------------------------- trained tiny runs, shared by the session
# A small, fast quickstart (2 epochs of digits, a checkpoint every 10 steps). Tests that only read a finished run
# (its files, its checkpoints, its weights as the bit-exact reference of a resumed run) share this one; it is
# trained in-process (one thread, like every test subprocess: bit-identical to `python train.py` with the same
# arguments). Tests that use it assert that their own FAST list is this one.
QUICKSTART_FAST = ["experiment=quickstart", "trainer.epochs=2", "trainer.log_every_steps=5",
                   "trainer.eval_every_epochs=1", "trainer.checkpoint_every_steps=10"]


@pytest.fixture(scope="session")
def quickstart_fast_run(tmp_path_factory):
    """(run_dir, args): a finished run of QUICKSTART_FAST. Read it, never write into it."""
    from ham.cli import main

    rd = tmp_path_factory.mktemp("quickstart_fast") / "run"
    assert main([*QUICKSTART_FAST, f"hydra.run.dir={rd}"]) == 0
    return rd, list(QUICKSTART_FAST)
