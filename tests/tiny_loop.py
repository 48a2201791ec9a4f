"""The small training loops of the sparsifier tests: the trainer's own step (ham.train.step.TrainStep) and its
checkpoint state (ham.train.state.TrainState) over a tiny model, driven epoch by epoch in the trainer's order
(sparsifier.on_epoch_start at each epoch's first step). One copy for all tests."""

import io

import torch

from ham.optim.factory import StepSchedule
from ham.train.distributed import DistEnv
from ham.train.state import TrainState
from ham.train.step import TrainStep


class TinyLoop:
    """Subclasses set .model, .opt (HAM), .sp (set up and attached), steps_per_epoch, and batch(step) -> (x, y),
    then call start(). run(n) takes n steps; checkpoint()/restore() serialise the whole training state as the
    trainer's checkpoints do."""

    steps_per_epoch: int

    def start(self, ckpt_dir="unused"):
        """ckpt_dir: where self.state.save() writes and self.state.resume("auto") looks (the trainer's files)."""
        # a constant schedule (factor 1.0: the optimizer's own lr, exactly) so the state is the trainer's
        self.train_step = TrainStep(self.model, self.opt, StepSchedule(self.opt, lambda k: 1.0), self.sp)
        self.state = TrainState(self.train_step, DistEnv(), ckpt_dir=ckpt_dir)
        self.skipped: list[int] = []

    def batch(self, step):
        raise NotImplementedError

    @property
    def step(self) -> int:
        return self.state.progress.step

    def run(self, steps, check=None):
        for _ in range(steps):
            epoch, batch = divmod(self.step, self.steps_per_epoch)
            if batch == 0:
                self.sp.on_epoch_start(epoch)
            x, y = self.batch(self.step)
            self.train_step(x, y, self.step)
            if not self.train_step.stepped:
                self.skipped.append(self.step)
            self.state.progress.step += 1
            if check:
                check(self)
        return self

    def run_to(self, last_step, each_step=None):
        return self.run(last_step - self.step, check=each_step)

    def checkpoint(self) -> bytes:
        buf = io.BytesIO()
        torch.save(self.state.state_dict(), buf)
        return buf.getvalue()

    def restore(self, blob: bytes):
        self.state.load_state_dict(torch.load(io.BytesIO(blob), weights_only=True))  # as the trainer loads
        return self
