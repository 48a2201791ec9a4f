"""Atomic checkpoints (temp file + fsync + rename, last `keep` kept), safe loading, RNG capture/restore.

Everything saved is weights_only-loadable (tensors, numbers, strings, lists, dicts): loading can never execute
code. A truncated or corrupt newest checkpoint falls back to the previous one, with a warning.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

PATTERN = "ckpt_*.pt"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(state: dict[str, Any], ckpt_dir: Path, step: int, keep: int = 2) -> Path:
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"ckpt_{step:09d}.pt"
    tmp = ckpt_dir / f".{final.name}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(ckpt_dir)
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Oldest first (names sort by step)."""
    ckpt_dir = Path(ckpt_dir)
    return sorted(ckpt_dir.glob(PATTERN)) if ckpt_dir.is_dir() else []


def load_checkpoint_file(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


class AllCheckpointsCorrupt(RuntimeError):
    pass


def load_latest_checkpoint(ckpt_dir: Path, map_location: Any = "cpu") -> tuple[dict[str, Any], Path] | None:
    candidates = list_checkpoints(ckpt_dir)[::-1]
    errors = []
    for i, path in enumerate(candidates):
        try:
            return load_checkpoint_file(path, map_location), path
        except Exception as e:  # truncated zip, bad pickle, refused global: all mean "unusable"
            reason = " ".join(str(e).split())[:200]
            nxt = candidates[i + 1].name if i + 1 < len(candidates) else "nothing"
            print(f"warning: checkpoint {path.name} is corrupt ({type(e).__name__}: {reason}); falling back to "
                  f"{nxt}", file=sys.stderr, flush=True)
            errors.append(path.name)
    if errors:
        raise AllCheckpointsCorrupt(f"every checkpoint in {ckpt_dir} is corrupt ({', '.join(errors)}); move them "
                                    f"away to start fresh, or pass resume=PATH")
    return None


# ------------------------------------------------------------------ RNG
def capture_rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
