"""Checkpoint digests, torch-free (the CLI checks a checkpoint before it has imported torch): a checkpoint
``ckpt_N.pt`` has its sha256 in ``ckpt_N.pt.sha256``, one line in sha256sum's format (``<hex>  ckpt_N.pt``);
ham/train/checkpoint.py writes it before the checkpoint takes its name and checks it at every load."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ham.train.io import atomic_write_text

_DIGEST_SUFFIX = ".sha256"
_DIGEST = re.compile(r"([0-9a-f]{64}) [ *](\S.*)")


class CheckpointDamaged(ValueError):
    """A checkpoint's bytes do not match its digest (or cannot be read): it must not be used."""


def digest_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + _DIGEST_SUFFIX)


def _digest_lines(side: Path) -> list[str]:
    """The hex digests a digest file lists (CheckpointDamaged if it is unreadable or malformed)."""
    try:
        text = side.read_text()
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointDamaged(f"its digest {side.name} is unreadable ({type(e).__name__})") from None
    found = [_DIGEST.fullmatch(line.strip()) for line in text.splitlines() if line.strip()]
    if not found or None in found:
        raise CheckpointDamaged(f"its digest {side.name} is malformed")
    return [m.group(1) for m in found]


def read_verified(path: Path) -> tuple[bytes, bool]:
    """(the file's bytes, verified): verified=True when they match the digest beside them; False when there is no
    digest (unverified). CheckpointDamaged when they do not match, or the digest file is unreadable/malformed."""
    path = Path(path)
    data = path.read_bytes()
    side = digest_path(path)
    try:
        expected = _digest_lines(side)
    except FileNotFoundError:
        return data, False
    actual = hashlib.sha256(data).hexdigest()
    if actual not in expected:
        raise CheckpointDamaged(f"sha256 mismatch: its {len(data)} bytes hash to {actual[:12]}..., {side.name} says "
                                f"{expected[0][:12]}...")
    return data, True


def verify_checkpoint(path: Path) -> bool:
    """True: the bytes match the digest; False: no digest (unverified); CheckpointDamaged: they do not match."""
    return read_verified(path)[1]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_digest(path: Path, digests: list[str]) -> Path:
    """``path``'s digest file, atomically, in sha256sum's format (one line per digest; normally one)."""
    return atomic_write_text(digest_path(path), "".join(f"{d}  {Path(path).name}\n" for d in digests))
