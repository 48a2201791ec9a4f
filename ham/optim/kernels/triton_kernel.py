"""Triton kernel for the hyperbolic step on CUDA: one read of x and g (and signs), one write of x, fp32 math,
ONE launch for a whole list of tensors.

The list is described by a small int64 table: per tensor, the element offset of x, g (and signs) from the first
tensor's address (so the kernel needs no pointer casts: `base + offset`), and its element count; per block of
BLOCK elements, which tensor it belongs to and where in it it starts. The block map depends only on the element
counts and is cached on the device; the offsets depend on the tensors' addresses and are cached by those (a miss
is one small non-blocking copy from pinned memory: no host-device synchronisation). Every tensor is treated as
flat storage, so channels_last (or any non-overlapping, dense) tensors work as long as x, g and signs share the
layout (ham.optim.kernels checks that).

lr is either a plain float argument (Triton does not specialise on float values, so a new lr every step neither
recompiles nor copies anything to the device) or, for a one-element CUDA tensor (capturable schedulers), read by
the kernel through its pointer: no .item(), no host-device synchronisation.
Tested on CPU through Triton's interpreter (TRITON_INTERPRET=1, tests/test_kernels.py); production code only
sends CUDA tensors here.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import triton
import triton.language as tl

BLOCK = 2048
_CACHE_SIZE = 16
_block_maps: OrderedDict = OrderedDict()  # (device, numels) -> (block_tensor int64 [B], block_start int64 [B])
_offset_tables: OrderedDict = OrderedDict()  # (device, addresses, numels) -> int64 [4, T]


@triton.jit
def _hyperbolic_list_kernel(x_base, g_base, s_base, table, blk_tensor, blk_start, n_tensors, lr, lr_ptr, alpha,
                            beta, c, HAS_SIGNS: tl.constexpr, LR_FROM_PTR: tl.constexpr,
                            BETA_WHERE_GRAD: tl.constexpr, ALIGNED: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(0)
    t = tl.load(blk_tensor + pid)
    start = tl.multiple_of(tl.load(blk_start + pid), BLOCK_SIZE)
    x_off = tl.load(table + t)  # table rows: x offsets, g offsets, sign offsets, element counts
    g_off = tl.load(table + n_tensors + t)
    if ALIGNED:  # every offset a multiple of 16 elements (checked on the host): lets loads vectorise
        x_off = tl.multiple_of(x_off, 16)
        g_off = tl.multiple_of(g_off, 16)
    n = tl.load(table + 3 * n_tensors + t)
    idx = start + tl.arange(0, BLOCK_SIZE).to(tl.int64)  # int64: tensors beyond 2^31 elements stay correct
    m = idx < n
    x = tl.load(x_base + (x_off + idx), mask=m, other=0.0).to(tl.float32)
    g = tl.load(g_base + (g_off + idx), mask=m, other=0.0).to(tl.float32)
    if HAS_SIGNS:
        s_off = tl.load(table + 2 * n_tensors + t)
        if ALIGNED:
            s_off = tl.multiple_of(s_off, 16)
        src = tl.load(s_base + (s_off + idx), mask=m, other=0).to(tl.float32)
    else:
        src = x
    if LR_FROM_PTR:
        lr_v = tl.load(lr_ptr).to(tl.float32)
    else:
        lr_v = lr
    sign = tl.where(src > 0, 1.0, tl.where(src < 0, -1.0, 0.0))
    b = beta
    if BETA_WHERE_GRAD:
        b = tl.where(g != 0, beta, 0.0)
    e = -lr_v * (alpha * sign * g + b)
    e = tl.minimum(tl.maximum(e, -c), c)
    out = x * tl.exp(e)
    tl.store(x_base + (x_off + idx), out.to(x_base.dtype.element_ty), mask=m)


def _to_device(values: list[int], device: torch.device) -> torch.Tensor:
    host = torch.tensor(values, dtype=torch.int64)
    if device.type != "cuda":
        return host  # Triton's interpreter: CPU tensors
    return host.pin_memory().to(device, non_blocking=True)  # pinned + non_blocking: no host sync


def _remember(cache: OrderedDict, key, make):
    hit = cache.get(key)
    if hit is None:
        hit = cache[key] = make()
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return hit


def _block_map(device: torch.device, numels: tuple[int, ...]):
    def make():
        tensor_of, start_of = [], []
        for i, n in enumerate(numels):
            nb = -(-n // BLOCK)
            tensor_of += [i] * nb
            start_of += range(0, nb * BLOCK, BLOCK)
        return _to_device(tensor_of, device), _to_device(start_of, device), len(tensor_of)

    return _remember(_block_maps, (device, numels), make)


def _offsets(tensors) -> tuple[int, ...]:
    """Element offsets of each tensor's first element from the first tensor's (allocations are aligned to at
    least the element size, so the byte differences divide exactly)."""
    size = tensors[0].element_size()
    base = tensors[0].data_ptr()
    out = []
    for t in tensors:
        d = t.data_ptr() - base
        if d % size:
            raise ValueError("tensor addresses are not aligned to their element size")
        out.append(d // size)
    return tuple(out)


def triton_hyperbolic_list_(params, grads, signs, *, lr, alpha: float, beta: float, clamp: float,
                            beta_where_grad: bool) -> None:
    """All tensors on ONE device (CUDA; CPU only under TRITON_INTERPRET=1), params of one dtype, grads of that
    dtype, signs (if given) of one dtype; each x, g, s with the same shape and the same dense layout (flat storage
    is stepped). clamp = inf for no bound; lr a float or a one-element tensor on that device (or on the CPU,
    read once on the host). One kernel launch for the whole list, whatever the current device is."""
    keep = [i for i, p in enumerate(params) if p.numel() > 0]
    if not keep:
        return
    params, grads = [params[i] for i in keep], [grads[i] for i in keep]
    signs = [signs[i] for i in keep] if signs is not None else None
    device = params[0].device
    numels = tuple(p.numel() for p in params)
    lr_ptr = None
    if isinstance(lr, torch.Tensor):
        if lr.device == device:
            lr_ptr = lr.reshape(1)
        else:  # a CPU tensor: reading it involves no device
            lr = float(lr)
    blk_tensor, blk_start, n_blocks = _block_map(device, numels)
    x_off, g_off = _offsets(params), _offsets(grads)
    s_off = _offsets(signs) if signs is not None else (0,) * len(params)
    table = _remember(_offset_tables, (device, x_off, g_off, s_off, numels),
                      lambda: _to_device([*x_off, *g_off, *s_off, *numels], device))
    aligned = all(o % 16 == 0 for o in (*x_off, *g_off, *s_off))
    ctx = torch.cuda.device(device) if device.type == "cuda" else _null()
    with ctx:
        _hyperbolic_list_kernel[(n_blocks,)](
            params[0], grads[0], signs[0] if signs is not None else params[0], table, blk_tensor, blk_start,
            len(params), 0.0 if lr_ptr is not None else float(lr), lr_ptr if lr_ptr is not None else params[0],
            float(alpha), float(beta), float(clamp), HAS_SIGNS=signs is not None, LR_FROM_PTR=lr_ptr is not None,
            BETA_WHERE_GRAD=beta_where_grad, ALIGNED=aligned, BLOCK_SIZE=BLOCK)


def triton_hyperbolic_(x: torch.Tensor, g: torch.Tensor, *, lr, alpha: float, beta: float, clamp: float,
                       signs: torch.Tensor | None, beta_where_grad: bool) -> None:
    """One tensor (see triton_hyperbolic_list_)."""
    triton_hyperbolic_list_([x], [g], [signs] if signs is not None else None, lr=lr, alpha=alpha, beta=beta,
                            clamp=clamp, beta_where_grad=beta_where_grad)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def compiled_variants() -> int | None:
    """How many specialisations of the kernel Triton has compiled in this process (None if this Triton's
    internals differ); the benchmark checks that a changing lr adds none."""
    try:
        return sum(len(cache[0]) for cache in _hyperbolic_list_kernel.device_caches.values())
    except Exception:  # noqa: BLE001
        return None
