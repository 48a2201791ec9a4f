#!/usr/bin/env bash
# Build the wheel and the sdist of ham-optim, install each into a fresh virtual environment that holds only torch,
# and run a tiny training example there (.ci/dist_smoke.py, then examples/plain_pytorch.py and a `python -c`).
# Run by .ci/run; usable alone: bash .ci/check_dist.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$PATH"
repo=$(pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/ham-dist.XXXXXX")
trap 'rm -rf "$work"' EXIT

# same interpreter and torch as the project environment (so uv's cache serves torch: no download)
python=$(uv run --no-sync python -c 'import os, sys; print(os.path.realpath(sys.executable))')
torch_version=$(uv run --no-sync python -c 'import importlib.metadata as m; print(m.version("torch"))')

uv build --quiet --out-dir "$work/dist" "$repo"
ls "$work/dist"
wheel=$(ls "$work"/dist/*.whl)
sdist=$(ls "$work"/dist/*.tar.gz)

for pkg in "$wheel" "$sdist"; do
    venv="$work/venv-$(basename "$pkg")"
    echo "== $(basename "$pkg") in a fresh venv with torch==$torch_version only"
    uv venv --quiet --python "$python" "$venv"
    uv pip install --quiet --python "$venv/bin/python" "torch==$torch_version" "$pkg"
    # nothing of the experiment stack came along
    extra=$(uv pip freeze --python "$venv/bin/python" \
        | grep -iE '^(hydra-core|omegaconf|timm|torchvision|wandb|scikit-learn|matplotlib|tqdm|numpy)==' || true)
    if [ -n "$extra" ]; then echo "unexpected packages installed: $extra"; exit 1; fi
    # run from outside the checkout so that `ham` can only come from the installed package
    (cd "$work" && OMP_NUM_THREADS=1 "$venv/bin/python" "$repo/.ci/dist_smoke.py")
    (cd "$work" && "$venv/bin/python" "$repo/examples/plain_pytorch.py" --steps 40 | tail -1)
    (cd "$work" && "$venv/bin/python" -c "import ham, sys; from ham import HAM, SAM, hyperbolic_step_; \
bad = {'hydra', 'omegaconf', 'timm', 'torchvision', 'wandb'} & {m.split('.')[0] for m in sys.modules}; \
assert not bad, bad; print('import ham: OK, version', ham.__version__)")
done
echo "dist check passed: wheel and sdist install and train with only torch"
