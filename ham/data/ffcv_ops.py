"""ffcv decoders whose random augmentation is a pure function of (seed, epoch, sample index).

ffcv's own random ops draw from numba's per-thread generators inside `prange`, so which image gets which crop
depends on thread scheduling and cannot be replayed. These decoders reseed numba's generator for every sample
from `SampleSeeds`: one uint32 per dataset index, rewritten in place (numpy, vectorised) before each epoch. The
compiled code reads that array through its fixed address, so nothing is recompiled per epoch.

    SeededRandomResizedCrop   RandomResizedCrop at decode time (+ horizontal flip): the ImageNet train path
    SeededFixedSize           constant-size images: random translation with zero fill (+ flip): CIFAR/digits
ffcv's CenterCropRGBImageDecoder (deterministic) is the validation path.

Importing this module imports ffcv, numba and OpenCV.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from ffcv.fields.rgb_image import IMAGE_MODES, ResizedCropRGBImageDecoder, SimpleRGBImageDecoder, get_random_crop
from ffcv.libffcv import imdecode, memcpy, resize_crop
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from numba import carray, types
from numba.core import cgutils
from numba.extending import intrinsic

_M64 = np.uint64((1 << 64) - 1)


@intrinsic
def _as_pointer(typingctx, address):  # an integer address -> void* (for numba.carray)
    sig = types.voidptr(address)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return sig, codegen


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class SampleSeeds:
    """One uint32 per dataset index; `set(key)` rewrites them for a new epoch: seed_i = hash(key, i)."""

    def __init__(self, n: int):
        self.values = np.zeros(max(int(n), 1), dtype=np.uint32)
        self._index = np.arange(len(self.values), dtype=np.uint64)

    @property
    def address(self) -> int:
        return int(self.values.ctypes.data)

    def set(self, key: int) -> None:
        h = _splitmix(self._index ^ _splitmix(np.array([key], dtype=np.uint64))[0])
        self.values[:] = (h >> np.uint64(32)).astype(np.uint32)


def _seed_reader(seeds: SampleSeeds):
    address, n = seeds.address, len(seeds.values)

    def read_seeds():
        return carray(_as_pointer(address), (n,), dtype=np.uint32)

    return Compiler.compile(read_seeds)


def _flip_rows(img):
    h, w = img.shape[0], img.shape[1]
    for y in range(h):
        for x in range(w // 2):
            for c in range(img.shape[2]):
                a = img[y, x, c]
                img[y, x, c] = img[y, w - 1 - x, c]
                img[y, w - 1 - x, c] = a


class SeededRandomResizedCrop(ResizedCropRGBImageDecoder):
    """torchvision's RandomResizedCrop (same scale/ratio sampling) on the decoded image, resized to output_size
    (OpenCV INTER_AREA), then a horizontal flip with probability 1/2 when `flip`."""

    def __init__(self, output_size, seeds: SampleSeeds, *, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                 flip: bool = True):
        super().__init__(output_size)
        self.seeds, self.scale, self.ratio, self.flip = seeds, scale, ratio, flip

    @property
    def get_crop_generator(self):
        return get_random_crop

    def generate_code(self):
        jpg = IMAGE_MODES["jpg"]
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        imdecode_c = Compiler.compile(imdecode)
        resize_crop_c = Compiler.compile(resize_crop)
        get_crop_c = Compiler.compile(get_random_crop)
        flip_c = Compiler.compile(_flip_rows)
        read_seeds = _seed_reader(self.seeds)
        scale, ratio, do_flip = np.array(self.scale), np.array(self.ratio), self.flip

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage = my_storage
            seeds = read_seeds()
            for dst_ix in my_range(len(batch_indices)):
                source_ix = batch_indices[dst_ix]
                field = metadata[source_ix]
                image_data = mem_read(field["data_ptr"], storage_state)
                height = np.uint32(field["height"])
                width = np.uint32(field["width"])
                if field["mode"] == jpg:
                    temp_buffer = temp_storage[dst_ix]
                    imdecode_c(image_data, temp_buffer, height, width, height, width, 0, 0, 1, 1, False, False)
                    temp_buffer = temp_buffer.reshape(-1)[:3 * height * width].reshape(height, width, 3)
                else:
                    temp_buffer = image_data.reshape(height, width, 3)
                np.random.seed(seeds[source_ix])
                i, j, h, w = get_crop_c(height, width, scale, ratio)
                resize_crop_c(temp_buffer, i, i + h, j, j + w, destination[dst_ix])
                if do_flip and np.random.random() < 0.5:
                    flip_c(destination[dst_ix])
            return destination[:len(batch_indices)]

        decode.is_parallel = True
        return decode


class SeededFixedSize(SimpleRGBImageDecoder):
    """Constant-size images as stored, then a random translation by up to `translate` pixels per axis (the
    uncovered border is 0, like torchvision's RandomCrop(size, padding) with zero padding) and a horizontal flip
    with probability 1/2 when `flip`. translate=0 and flip=False: the stored pixels unchanged."""

    def __init__(self, seeds: SampleSeeds, *, translate: int = 0, flip: bool = False):
        super().__init__()
        self.seeds, self.translate, self.flip = seeds, int(translate), flip

    def declare_state_and_memory(self, previous_state):
        state, query = super().declare_state_and_memory(previous_state)
        return replace(state), (query, AllocationQuery(state.shape, state.dtype))

    def generate_code(self):
        jpg = IMAGE_MODES["jpg"]
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        imdecode_c = Compiler.compile(imdecode)
        my_memcpy = Compiler.compile(memcpy)
        read_seeds = _seed_reader(self.seeds)
        pad, do_flip = self.translate, self.flip

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage = my_storage
            seeds = read_seeds()
            for dst_ix in my_range(len(batch_indices)):
                source_ix = batch_indices[dst_ix]
                field = metadata[source_ix]
                image_data = mem_read(field["data_ptr"], storage_state)
                height, width = field["height"], field["width"]
                src = temp_storage[dst_ix]
                if field["mode"] == jpg:
                    imdecode_c(image_data, src, height, width, height, width, 0, 0, 1, 1, False, False)
                else:
                    my_memcpy(image_data, src)
                np.random.seed(seeds[source_ix])
                dy, dx = 0, 0
                if pad > 0:
                    dy = np.random.randint(-pad, pad + 1)
                    dx = np.random.randint(-pad, pad + 1)
                flip = do_flip and np.random.random() < 0.5
                out = destination[dst_ix]
                h, w = src.shape[0], src.shape[1]
                for y in range(h):
                    sy = y - dy
                    for x in range(w):
                        xs = w - 1 - x if flip else x  # flip after the shift: out[y, x] = shifted[y, w-1-x]
                        sx = xs - dx
                        if 0 <= sy < h and 0 <= sx < w:
                            for c in range(3):
                                out[y, x, c] = src[sy, sx, c]
                        else:
                            for c in range(3):
                                out[y, x, c] = 0
            return destination[:len(batch_indices)]

        decode.is_parallel = True
        return decode


class NormalizeToFloat:
    """uint8 [B, H, W, 3] -> float32, (x / scale - mean) / std per channel, in ffcv's decoding threads (CPU
    training: one fused parallel pass instead of four single-threaded torch passes in the training loop).
    Layout [B, C, H, W], or [B, H, W, C] when `channels_last` (torch then views it as channels_last NCHW).
    gray: keep channel 0 only (C = 1)."""

    def __new__(cls, mean, std, *, scale: float = 255.0, gray: bool = False, channels_last: bool = False):
        from ffcv.pipeline.operation import Operation

        class _Normalize(Operation):
            def declare_state_and_memory(self, previous_state):
                h, w, _ = previous_state.shape
                c = 1 if gray else 3
                shape = (h, w, c) if channels_last else (c, h, w)
                return (replace(previous_state, jit_mode=True, shape=shape, dtype=np.dtype("float32")),
                        AllocationQuery(shape, np.dtype("float32")))

            def generate_code(self):
                my_range = Compiler.get_iterator()
                m = np.array(mean, dtype=np.float32)
                s = np.array(std, dtype=np.float32)
                k = np.float32(scale)
                c_out, last = (1 if gray else 3), channels_last

                def normalize(images, dst):
                    n, h, w = images.shape[0], images.shape[1], images.shape[2]
                    for i in my_range(n):
                        for c in range(c_out):
                            for y in range(h):
                                for x in range(w):
                                    v = (np.float32(images[i, y, x, c]) / k - m[c]) / s[c]
                                    if last:
                                        dst[i, y, x, c] = v
                                    else:
                                        dst[i, c, y, x] = v
                    return dst[:n]

                normalize.is_parallel = True
                return normalize

        return _Normalize()
