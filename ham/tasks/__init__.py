"""Tasks: what a dataset's declaration says it is (its `task` fact, "module:Class"; none: image classification).

A task supplies what the shared trainer (ham/train: build, step, state, loop) does not know: the data (loaders of
(inputs, targets) batches), the model's inputs and the targets its loss reads, and the evaluation metrics. The
step (forward, cross-entropy on the targets, SAM, clipping, sparsifier hooks, the optimizer with HAM, the
schedule), checkpoints, resume and logging are the same for every task.

    ImageClassification  ham/tasks/image.py  (images, labels) batches; top-1/top-5 evaluation
    NodeClassification   ham/tasks/node.py   one full graph per step; targets are the training nodes' labels
                                             (-100 elsewhere: ignored by the loss); val/test accuracy or ROC-AUC
                                             on the split's masks, and the best validation so far
"""

from __future__ import annotations

IMAGE_TASK = "ham.tasks.image:ImageClassification"


def task_for(dataset: str):
    """The task object of a declared dataset (its `task` fact)."""
    from ham import registry

    return registry.resolve(registry.fact("dataset", dataset, "task", IMAGE_TASK))()
