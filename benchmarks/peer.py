"""The peer for benchmarks/speed.py: Hugging Face transformers + PEFT on the same GGUF.

`AutoModelForSequenceClassification` loaded from the embedded Gemma 3 270M GGUF, LoRA
rank 8, alpha 16, dropout 0.1 on q_proj and v_proj, AdamW 2e-4, standard dynamic
padding (each batch of the given order padded to its longest review); float32, or a
bfloat16 base with float32 adapters. Run by
speed.py in a subprocess; needs `pip install -e '.[peer]'`.
"""

import json
import os
import time
from pathlib import Path

import click
import numpy as np
from peak_memory import peak_rss_mb


def load_peer(max_length, lora_layers, dtype="float32"):
    import torch
    from peft import LoraConfig
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification
    from transformers import AutoTokenizer

    from kgemma.presets import embedded_gguf_path

    gguf = Path(embedded_gguf_path())
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForSequenceClassification.from_pretrained(gguf.parent, gguf_file=gguf.name, num_labels=2, dtype=getattr(torch, dtype))
    model.config.pad_token_id = tokenizer.pad_token_id
    layers = None
    if lora_layers:
        total = model.config.num_hidden_layers
        layers = list(range(total - lora_layers, total))
    config = LoraConfig(
        task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.1, bias="none",
        target_modules=["q_proj", "v_proj"], layers_to_transform=layers,
    )  # fmt: skip
    # With a bfloat16 base, PEFT keeps the adapters float32 (autocast_adapter_dtype).
    model = get_peft_model(model, config)
    return tokenizer, model


def batches_of(tokenizer, texts, batch_size, max_length):
    for start in range(0, len(texts), batch_size):
        yield tokenizer(texts[start : start + batch_size], padding="longest", truncation=True, max_length=max_length, return_tensors="pt")


def timed_pass(run, batches):
    started = time.perf_counter()
    for batch in batches:
        run(batch)
    return time.perf_counter() - started


@click.command()
@click.option("--texts", required=True, type=click.Path(exists=True), help="JSON with 'texts' and 'labels'.")
@click.option("--output", required=True, type=click.Path(dir_okay=False))
@click.option("--max-length", default=512)
@click.option("--batch-size", default=8)
@click.option("--fixed-length", default=256)
@click.option("--batches", default=3, help="Batches for the fixed-length measurement.")
@click.option("--lora-layers", default=0, help="Adapt only the top N layers (0: all).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", help="The base model's dtype.")
def main(texts, output, max_length, batch_size, fixed_length, batches, lora_layers, dtype):
    import torch

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    data = json.loads(Path(texts).read_text())
    tokenizer, model = load_peer(max_length, lora_layers, dtype)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.0)

    def infer(batch):
        model.eval()
        with torch.no_grad():
            model(**{k: v for k, v in batch.items() if k != "labels"})

    def train(batch):
        model.train()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    labels = torch.tensor(data["labels"])
    real = list(batches_of(tokenizer, data["texts"], batch_size, max_length))
    for i, batch in enumerate(real):
        batch["labels"] = labels[i * batch_size : (i + 1) * batch_size]
    rng = np.random.default_rng(0)
    ids = torch.tensor(rng.integers(4, 8000, size=(batches, batch_size, fixed_length)))
    ids[:, :, 0] = tokenizer.bos_token_id
    fixed = [{"input_ids": b, "attention_mask": torch.ones_like(b), "labels": torch.arange(batch_size) % 2} for b in ids]

    result = {"padded_tokens_mean": float(np.mean([b["input_ids"].shape[1] for b in real]))}
    n_real, n_fixed = len(data["texts"]), batches * batch_size
    for name, run in (("inference", infer), ("training", train)):
        timed_pass(run, fixed[:1])  # First-call overhead.
        result[f"fixed_{name}_reviews_per_s"] = n_fixed / timed_pass(run, fixed)
        result[f"real_{name}_reviews_per_s"] = n_real / timed_pass(run, real)
    result["peak_rss_mb"] = peak_rss_mb()
    Path(output).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
