"""One thread per test process and per subprocess it starts (train.py, torchrun ranks, examples), unless a test
is about threads (mark it `threads`: it gets the machine's threads back for its duration).

Two cores run the suite (CI sets OMP_NUM_THREADS=2): every process with several intra-op threads oversubscribes
them as soon as two processes run at once (a torchrun pair, a test and its subprocess), which costs 4-9x.
Set here, before torch is imported, so the in-process default and every child's environment agree."""

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
