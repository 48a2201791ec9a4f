"""Checkpoint/restore for the small hook-order training loops of the sparsifier tests (one copy for all)."""

import io

import torch


class LoopState:
    """Mixin for a loop with .model, .opt, .sp and .step: serialise and restore its whole training state."""

    def checkpoint(self) -> bytes:
        buf = io.BytesIO()
        torch.save({"model": self.model.state_dict(), "opt": self.opt.state_dict(), "sp": self.sp.state_dict(),
                    "step": self.step}, buf)
        return buf.getvalue()

    def restore(self, blob: bytes):
        st = torch.load(io.BytesIO(blob), weights_only=True)  # as the trainer loads checkpoints
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.sp.load_state_dict(st["sp"])
        self.step = st["step"]
        return self
