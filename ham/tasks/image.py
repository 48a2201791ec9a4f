"""Image classification: the datasets of ham/data/datasets.py (or ffcv files) in resumable loaders; top-1/top-5."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from ham.train.distributed import DistEnv


class ImageClassification:
    """Batches of (images, labels); the step's cross-entropy (label smoothing, mixup) on them; top-1/top-5."""

    save_every_epoch = True  # a checkpoint at every epoch end (and every trainer.checkpoint_every_steps)

    def data(self, cfg: DictConfig, env: DistEnv, *, per_rank_batch: int, eval_batch: int, channels_last: bool):
        """(train_loader, val_loader, DatasetInfo)."""
        from ham.data.datasets import build_datasets
        from ham.data.ffcv_loader import build_ffcv_loaders
        from ham.data.loader import build_loader
        from ham.train.threads import choose_workers

        ds, t = cfg.dataset, cfg.trainer
        if ds.loader == "ffcv":  # data_dir's .beton files; uint8 to the device, normalised there
            return build_ffcv_loaders(cfg, env, per_rank_batch=per_rank_batch, eval_batch=eval_batch,
                                      channels_last=channels_last)
        train_ds, val_ds, data_info = build_datasets(
            ds.name, cfg.data_dir, img_size=ds.img_size, augment=ds.augment, download=ds.download,
            smoke_images=ds.smoke_images, **OmegaConf.to_container(ds.options, resolve=True))
        common = dict(seed=cfg.seed, rank=env.rank, world_size=env.world_size,
                      num_workers=choose_workers(t.num_workers, env.world_size), pin_memory=env.device.type == "cuda",
                      backend=ds.loader)
        train_loader = build_loader(train_ds, batch_size=per_rank_batch, train=True, drop_last=True, **common)
        val_loader = build_loader(val_ds, batch_size=eval_batch, train=False, drop_last=False, **common)
        return train_loader, val_loader, data_info

    def evaluate(self, model, loader, device, *, autocast, channels_last: bool = False) -> dict[str, float]:
        from ham.train.evaluate import evaluate

        return evaluate(model, loader, device, autocast=autocast, channels_last=channels_last,
                        flip=loader.test_time_flip)

    def track_best(self, val: dict[str, float], history: dict[str, Any], step: int) -> dict[str, float]:
        """Image classification reports the last evaluation as it is."""
        return val
