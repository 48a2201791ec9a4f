"""HAM on LoRA adapters with Hugging Face ``transformers.Trainer`` and ``peft`` (needs the `examples` extra).

    python examples/hf_lora.py [--steps 60] [--no-ham]

The paper's Table 4 setting in miniature (LLaMA-3.2 + LoRA, AdamW, HAM alpha=200 beta=1e-3 for the 1B model):
a tiny, randomly initialised LLaMA built from a config object (nothing is downloaded) gets LoRA adapters on
its attention and MLP projections; HAM wraps AdamW over the LoRA matrices only (peft freezes every other
parameter, and any trainable non-LoRA parameter would get ``ham=False``), and the wrapper goes to the Trainer
through ``optimizers=(optimizer, scheduler)``.

peft initialises each LoRA ``B`` to exactly zero. The hyperbolic step is multiplicative (zeros stay zero), but
it follows the base step, which has already moved ``B`` away from zero, so HAM acts on ``B`` from the first step.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from peft import LoraConfig, get_peft_model
from torch.utils.data import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments, get_cosine_schedule_with_warmup

from ham import HAM

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]   # as in the DoRA setup the paper used


class RepeatTokens(Dataset):
    """Sequences that repeat a random 8-token motif: learnable by attention, no tokenizer needed."""

    def __init__(self, n: int = 64, seq_len: int = 32, vocab: int = 64, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        motif = torch.randint(0, vocab, (n, 8), generator=g)
        self.ids = motif.repeat(1, seq_len // 8)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def tiny_llama(vocab: int = 64, hidden: int = 32, layers: int = 2, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg)


def lora_param_groups(model: torch.nn.Module) -> list[dict]:
    """Trainable parameters split into LoRA matrices (HAM on) and anything else (HAM off)."""
    lora, other = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (lora if "lora_" in name else other).append(p)
    return [{"params": lora}] + ([{"params": other, "ham": False}] if other else [])


def train(steps: int = 60, use_ham: bool = True, alpha: float = 200.0, beta: float = 1e-3, lr: float = 2e-2,
          output_dir: str | None = None, seed: int = 0, verbose: bool = False):
    """Returns the peft model after ``steps`` Trainer steps."""
    model = get_peft_model(tiny_llama(seed=seed),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=LORA_TARGETS,
                                      task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW(lora_param_groups(model), lr=lr, weight_decay=0.0)
    if use_ham:
        opt = HAM(opt, alpha=alpha, beta=beta)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=steps // 10, num_training_steps=steps)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=output_dir or tmp, max_steps=steps, per_device_train_batch_size=8, use_cpu=True,
            report_to="none", save_strategy="no", logging_steps=max(1, steps // 5), disable_tqdm=not verbose,
            seed=seed, data_seed=seed, dataloader_num_workers=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=RepeatTokens(seed=seed), optimizers=(opt, sched))
        result = trainer.train()
    if verbose:
        print(f"final train loss {result.training_loss:.4f}")
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--no-ham", action="store_true", help="plain AdamW on the adapters, for comparison")
    args = ap.parse_args()
    model = train(steps=args.steps, use_ham=not args.no_ham, verbose=True)
    model.print_trainable_parameters()


if __name__ == "__main__":
    main()
