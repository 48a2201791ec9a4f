#!/usr/bin/env python
"""Prepare what must travel to an offline GPU machine: wheels of the project's dependencies it lacks.

    python benchmarks/prepare_gpu_wheels.py [--dir .gpu_wheels] [--python 3.12]

The GPU machines lent to this project have torch, torchvision, timm, triton, numpy, scikit-learn, matplotlib and
tqdm, but not hydra-core, omegaconf, antlr4-python3-runtime or wandb, and no network. This downloads wheels for
Python 3.12 on Linux x86-64 of those packages and of everything they need (closure taken from uv.lock, with its
environment markers evaluated for that target, at the versions uv.lock pins), through pip:
  - `pip download --only-binary=:all: --platform manylinux... --python-version 3.12 --no-deps` per package;
  - `pip wheel --no-deps` for the ones PyPI has only as a source archive (antlr4-python3-runtime 4.9.3): a pure
    Python py3-none-any wheel built here, so the GPU machine never builds anything.
It writes DIR/requirements.txt (the top-level pins) and prints the exact command to run there. DIR (default
.gpu_wheels/) is git-ignored; with the device tool, pass it in `carry`.

On the GPU machine, from the repository root (no network):

    python -m pip install --no-index --find-links .gpu_wheels -r .gpu_wheels/requirements.txt
    python benchmarks/gpu_check.py

Already installed packages that satisfy a requirement are kept (no --upgrade); any that do not are replaced by the
locked version from the folder, which has the whole closure.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
MISSING = ("hydra-core", "omegaconf", "antlr4-python3-runtime", "wandb")  # absent on the GPU machines
PRESENT = ("torch", "torchvision", "timm", "triton", "numpy", "scikit-learn", "matplotlib", "tqdm")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "manylinux_2_31_x86_64",
             "manylinux_2_34_x86_64", "manylinux1_x86_64", "manylinux2010_x86_64")


def target_environment(python: str) -> dict[str, str]:
    """PEP 508 marker values of CPython `python` on Linux x86-64."""
    return {"python_version": python, "python_full_version": f"{python}.0", "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "os_name": "posix", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "platform_release": "",
            "platform_version": "", "extra": ""}


def locked_closure(lock_path: Path, roots, env: dict[str, str]) -> dict[str, str]:
    """{name: version} of `roots` and everything they depend on in uv.lock, for the target environment."""
    lock = tomllib.loads(lock_path.read_text())
    packages = {canonicalize_name(p["name"]): p for p in lock["package"]}
    out: dict[str, str] = {}
    todo = [canonicalize_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in out:
            continue
        pkg = packages.get(name)
        if pkg is None:
            raise SystemExit(f"{name} is not in {lock_path}")
        out[name] = pkg["version"]
        for dep in pkg.get("dependencies", []):
            marker = dep.get("marker")
            if marker and not Marker(marker).evaluate(env):
                continue
            todo.append(canonicalize_name(dep["name"]))
    return out


def has_only_sdist(lock_path: Path, name: str) -> bool:
    lock = tomllib.loads(lock_path.read_text())
    pkg = next(p for p in lock["package"] if canonicalize_name(p["name"]) == name)
    return not pkg.get("wheels")


def fetch(name: str, version: str, dest: Path, python: str, sdist_only: bool) -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    spec = f"{name}=={version}"
    if sdist_only:  # build a pure-Python wheel here, once
        cmd = [*pip, "wheel", "--no-deps", "-w", str(dest), spec]
    else:
        cmd = [*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", python,
               "--implementation", "cp", "-d", str(dest), spec]
        for plat in PLATFORMS:
            cmd += ["--platform", plat]
    subprocess.run(cmd, check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=str(ROOT / ".gpu_wheels"), help="output folder (git-ignored)")
    ap.add_argument("--python", default="3.12", help="the GPU machine's Python (major.minor)")
    ap.add_argument("--lock", default=str(ROOT / "uv.lock"))
    ap.add_argument("--list", action="store_true", help="only print what would be fetched")
    args = ap.parse_args(argv)
    lock, dest = Path(args.lock), Path(args.dir)
    closure = locked_closure(lock, MISSING, target_environment(args.python))
    present = {canonicalize_name(n) for n in PRESENT}
    wanted = {n: v for n, v in sorted(closure.items()) if n not in present}
    print(f"{len(wanted)} packages for CPython {args.python} linux x86-64 (closure of {', '.join(MISSING)} in "
          f"{lock.name}):")
    print("  " + " ".join(f"{n}=={v}" for n, v in wanted.items()))
    if args.list:
        return 0
    try:
        import pip  # noqa: F401 -- the ordinary client does the downloads
    except ImportError:
        print("this Python has no pip (uv venvs have none): run it with one that has, e.g. "
              "`python3 benchmarks/prepare_gpu_wheels.py`", file=sys.stderr)
        return 2
    dest.mkdir(parents=True, exist_ok=True)
    for name, version in wanted.items():
        have = [p for p in dest.glob("*.whl")
                if canonicalize_name(p.name.split("-")[0]) == name and p.name.split("-")[1] == version]
        if not have:
            fetch(name, version, dest, args.python, has_only_sdist(lock, name))
    stale = [p for p in dest.glob("*.whl") if (canonicalize_name(p.name.split("-")[0]), p.name.split("-")[1])
             not in set(wanted.items())]
    for p in stale:
        p.unlink()
    (dest / "requirements.txt").write_text("".join(f"{n}=={closure[canonicalize_name(n)]}\n" for n in MISSING))
    size = sum(p.stat().st_size for p in dest.glob("*.whl")) / 2**20
    rel = dest.resolve().relative_to(ROOT) if dest.resolve().is_relative_to(ROOT) else dest
    print(f"\n{len(list(dest.glob('*.whl')))} wheels, {size:.1f} MiB in {dest}")
    print("\nOn the GPU machine, from the repository root (no network needed):\n")
    print(f"    python -m pip install --no-index --find-links {rel} -r {rel}/requirements.txt")
    print("    python benchmarks/gpu_check.py")
    print(f"\nWith the device tool: run(command=\"python -m pip install -q --no-index --find-links {rel} -r "
          f"{rel}/requirements.txt && python benchmarks/gpu_check.py\", carry=[\"{rel}\"], timeout_s=600)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
