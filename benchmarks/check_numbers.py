"""The numbers stay the same: final weights of short real runs (quickstart, one per sparsifier, SAM with clipping),
recorded once and compared bit for bit after a change to the trainer.

    python benchmarks/check_numbers.py record REF_DIR      # before the change: REF_DIR/<case>.pt
    python benchmarks/check_numbers.py compare REF_DIR     # after it: torch.equal on every tensor, exit 1 if not
    python benchmarks/check_numbers.py compare REF_DIR --cases acdc,rigl

Each case runs `python train.py experiment=quickstart ...` in a fresh run dir with OMP_NUM_THREADS=1 (and one
torch thread), settings chosen so that each sparsifier acts within the steps (Ac/Dc compresses and decompresses,
RigL updates its masks, STR's budget rises and the final projection runs, Sign-In resets). Floating-point
results depend on the CPU and the torch build: compare against weights recorded on the same machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["trainer.global_batch_size=64", "trainer.log_every_steps=10", "trainer.progress_bar=false"]

CASES: dict[str, list[str]] = {
    "quickstart": ["trainer.max_steps=60"],
    "random": [*SHORT, "sparsifier=random", "trainer.max_steps=40"],
    "acdc": [*SHORT, "sparsifier=acdc", "trainer.epochs=4", "sparsifier.compress_epochs=[1,3]",
             "sparsifier.decompress_epochs=[2]", "trainer.eval_every_epochs=2"],
    "rigl": [*SHORT, "sparsifier=rigl", "trainer.epochs=3", "sparsifier.delta_t=5", "sparsifier.delta_t_batch=null"],
    "str": [*SHORT, "sparsifier=str", "trainer.epochs=3", "sparsifier.budget_every=5"],
    "signin": [*SHORT, "sparsifier=signin", "trainer.epochs=3", "sparsifier.period=1"],
    "signin_rigl": [*SHORT, "sparsifier=signin", "sparsifier.mask_source=rigl", "trainer.epochs=3",
                    "sparsifier.period=2", "+sparsifier.source.delta_t=5", "+sparsifier.source.delta_t_batch=null"],
    "mw": [*SHORT, "sparsifier=mw", "trainer.epochs=2"],
    "sam": [*SHORT, "optimizer=sam", "trainer.max_steps=40", "trainer.grad_clip_norm=1.0"],
}


def run_case(name: str, run_dir: Path) -> Path:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "train.py", "experiment=quickstart", *CASES[name], f"hydra.run.dir={run_dir}"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{name}: exit {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)
    return run_dir / "model_final.pt"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("record", "compare"))
    ap.add_argument("ref_dir", type=Path)
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    args = ap.parse_args()
    import torch

    names = [c for c in args.cases.split(",") if c]
    args.ref_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    with tempfile.TemporaryDirectory(prefix="ham_numbers_") as tmp:
        for name in names:
            final = run_case(name, Path(tmp) / name)
            ref = args.ref_dir / f"{name}.pt"
            if args.mode == "record":
                ref.write_bytes(final.read_bytes())
                continue
            a = torch.load(ref, map_location="cpu", weights_only=True)
            b = torch.load(final, map_location="cpu", weights_only=True)
            bad = sorted(set(a) ^ set(b)) or [k for k in a if not torch.equal(a[k], b[k])]
            print(f"  {name}: {'bit-identical' if not bad else 'DIFFERS: ' + ', '.join(bad[:5])} "
                  f"({len(a)} tensors)", flush=True)
            if bad:
                failed.append(name)
    if args.mode == "compare":
        print("all bit-identical" if not failed else f"different: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
