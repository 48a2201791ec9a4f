"""Atomic checkpoints, safe loading with fallback, RNG capture/restore.

Files: ``ckpt_dir/ckpt_{step:09d}.pt`` and its digest ``ckpt_{step:09d}.pt.sha256`` (one line in sha256sum's
format, ``<hex>  ckpt_{step:09d}.pt``, so ``sha256sum -c`` checks it by hand). There is no separate ``latest``
pointer: the newest checkpoint is the one with the largest step in its name, and a pointer would be a second file
to keep consistent with the first across a crash, while the loader has to cope with a bad newest file anyway.

Integrity: the digest is the sha256 of the checkpoint's bytes as written (read back from the temp file after its
fsync), written atomically BEFORE the checkpoint is renamed into place, so a checkpoint under its final name
always has its digest beside it (a crash in between leaves a digest without a checkpoint: ignored, removed by the
next save). Loading reads the bytes once, checks them against the digest, then unpickles those same bytes
(torch.load does not check the zip's own CRCs: random bytes inside a tensor load silently). A checkpoint without
a digest (written before digests existed, or its .sha256 removed by hand) still loads, with a warning line saying
it is unverified.

Everything saved must be weights_only-loadable (tensors, numbers, strings, None, lists, tuples, dicts; no numpy
arrays, no custom classes): loading uses ``torch.load(weights_only=True)`` and can never execute code.
A truncated or corrupt newest checkpoint falls back to the previous one, with a warning on stderr.
Single writer per directory (rank 0, holding the run directory's lock: ham/lifecycle/runlock.py). Temp files are
per process; a save removes only temps that are provably stale (their process is gone, or this process holds
the run directory's lock and is therefore the only writer).
"""

from __future__ import annotations

import contextlib
import io
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ham.train.digest import (  # noqa: F401 -- re-exported: the checkpoint API in one place
    _DIGEST_SUFFIX,
    CheckpointDamaged,
    _digest_lines,
    digest_path,
    file_digest,
    read_verified,
    verify_checkpoint,
    write_digest,
)
from ham.train.io import atomic_write, is_stale_temp

_NAME = re.compile(r"ckpt_(\d+)\.pt")
_TMP_GLOB = ".ckpt_*.pt.tmp-*"


class AllCheckpointsCorrupt(RuntimeError):
    pass


def checkpoint_path(ckpt_dir: Path, step: int) -> Path:
    return Path(ckpt_dir) / f"ckpt_{step:09d}.pt"


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoint files, oldest (smallest step) first; temp files and other names are ignored."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _NAME.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def _step_of(path: Path) -> int:
    return int(_NAME.fullmatch(path.name).group(1))


def save_checkpoint(state: dict[str, Any], ckpt_dir: Path, step: int, keep: int = 2) -> Path:
    """Write ``state`` atomically to ``ckpt_dir/ckpt_{step:09d}.pt`` and return that path.

    temp file in the same directory -> flush + fsync -> its digest file (atomic) -> os.replace -> fsync the
    directory: at every instant the final name holds either nothing or a complete file with its digest beside
    it. Then retention: the ``keep`` newest checkpoints up to
    ``step`` stay; checkpoints with a LARGER step are deleted too (they belong to an abandoned timeline: a
    corrupt file we fell back from, or a run restarted from an older checkpoint), so "newest" stays "current".
    Temp files left by a killed writer are removed (never another live writer's).
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(ckpt_dir, step)
    # replacing a checkpoint of the same step (the final save after an epoch-end save): until the rename, the
    # digest file lists the old file's digest too, so a crash in between leaves a file that still verifies
    prior: list[str] = []
    if target.exists():
        with contextlib.suppress(OSError, CheckpointDamaged):
            prior = _digest_lines(digest_path(target))[:1]
    new: list[str] = []

    def digest_first(tmp: Path) -> None:
        new.append(file_digest(tmp))
        write_digest(target, new + prior)

    final = atomic_write(target, lambda f: torch.save(state, f), before_replace=digest_first)
    if prior:
        write_digest(target, new)
    from ham.lifecycle import runlock

    sole = runlock.holds(ckpt_dir.parent)
    for tmp in ckpt_dir.glob(_TMP_GLOB):  # a SIGKILL mid-write leaves one behind
        if is_stale_temp(tmp, sole_writer=sole):
            tmp.unlink(missing_ok=True)
    ckpts = list_checkpoints(ckpt_dir)
    older = [p for p in ckpts if _step_of(p) <= step]
    for p in older[:-keep] + [p for p in ckpts if _step_of(p) > step]:
        p.unlink(missing_ok=True)
        digest_path(p).unlink(missing_ok=True)
    for side in ckpt_dir.glob("ckpt_*.pt" + _DIGEST_SUFFIX):  # a crash between digest and rename leaves one
        if _NAME.fullmatch(side.name[: -len(_DIGEST_SUFFIX)]) and not side.with_suffix("").exists():
            side.unlink(missing_ok=True)
    return final


def load_checkpoint_file(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """weights_only load (refuses pickled code/classes) of bytes checked against the digest beside them
    (CheckpointDamaged if they differ; no digest: loaded unverified); anything but a dict is refused too."""
    return load_verified(path, map_location)[0]


def load_verified(path: Path, map_location: Any = "cpu") -> tuple[dict[str, Any], bool]:
    """(state, verified) -- see load_checkpoint_file; verified=False: there was no digest to check."""
    data, verified = read_verified(path)
    state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"expected a dict, found {type(state).__name__}")
    return state, verified


def load_latest_checkpoint(ckpt_dir: Path, map_location: Any = "cpu") -> tuple[dict[str, Any], Path] | None:
    """(state, path) of the newest loadable checkpoint, falling back past corrupt ones with a warning.

    None if there is no checkpoint; AllCheckpointsCorrupt if there are some and none loads."""
    candidates = list_checkpoints(ckpt_dir)[::-1]
    for i, path in enumerate(candidates):
        try:
            state, verified = load_verified(path, map_location)
            if not verified:
                print(f"warning: checkpoint {path.name} has no digest ({digest_path(path).name}); loaded unverified",
                      file=sys.stderr, flush=True)
            return state, path
        except (MemoryError, torch.OutOfMemoryError):
            raise  # not the file's fault
        except Exception as e:  # truncated zip, bad pickle, refused global, wrong type: all mean "unusable"
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            nxt = candidates[i + 1].name if i + 1 < len(candidates) else "nothing (all checkpoints are corrupt)"
            print(f"warning: checkpoint {path.name} is corrupt ({reason}); falling back to {nxt}",
                  file=sys.stderr, flush=True)
    if candidates:
        names = ", ".join(p.name for p in candidates)
        raise AllCheckpointsCorrupt(f"every checkpoint in {ckpt_dir} is corrupt ({names}); move them away to "
                                    f"start fresh, or pass resume=PATH")
    return None


# ------------------------------------------------------------------ RNG
def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states (python, numpy global, torch CPU, every CUDA device), weights_only-safe."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of capture_rng_state; tolerates tensors loaded onto a GPU (map_location) and a different number
    of visible CUDA devices (restores the devices both have)."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    n = state["numpy"]
    keys = n["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, int(n["pos"]), int(n["has_gauss"]), float(n["cached"])))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), i)
