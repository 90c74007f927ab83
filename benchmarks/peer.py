"""The peer for benchmarks/speed.py: Hugging Face transformers + PEFT on the same GGUF.

`AutoModelForSequenceClassification` loaded from the embedded Gemma 3 270M GGUF, LoRA
rank 8, alpha 16, dropout 0.1 on q_proj and v_proj, AdamW 2e-4, standard dynamic
padding (each batch padded to its longest review); float32, or a bfloat16 base with
float32 adapters. `--order given` batches the reviews in the order given;
`--order grouped` is the peer at its best: inference in length-sorted batches, and
training in transformers' own `group_by_length=True` order (`LengthGroupedSampler`).
Run by speed.py in a subprocess; needs `pip install -e '.[peer]'`.
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
    model = AutoModelForSequenceClassification.from_pretrained(
        gguf.parent, gguf_file=gguf.name, num_labels=2, dtype=getattr(torch, dtype)
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    layers = None
    if lora_layers:
        total = model.config.num_hidden_layers
        layers = list(range(total - lora_layers, total))
    config = LoraConfig(
        task_type="SEQ_CLS",
        r=8,
        lora_alpha=16,
        lora_dropout=0.1,
        bias="none",
        target_modules=["q_proj", "v_proj"],
        layers_to_transform=layers,
    )
    # With a bfloat16 base, PEFT keeps the adapters float32 (autocast_adapter_dtype).
    model = get_peft_model(model, config)
    return tokenizer, model


def batches_of(tokenizer, texts, labels, order, batch_size, max_length):
    import torch

    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in rows], padding="longest", truncation=True, max_length=max_length, return_tensors="pt"
        )
        batch["labels"] = torch.tensor([labels[i] for i in rows])
        yield batch


def review_orders(tokenizer, texts, order, batch_size, max_length):
    """Row orders for inference and training: as given, or grouped by length the
    way transformers groups them: sorted for inference, and for training the
    order of `group_by_length=True` (`get_length_grouped_indices`, megabatches of
    50 batches sorted inside). On a training set of 1,600 reviews or more that is
    its own default; on a small benchmark sample the default would shrink the
    megabatches and pad more, so the megabatch size is pinned at 50 batches, the
    same window kgemma's length buckets sort in."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    given = list(range(len(texts)))
    if order == "given":
        return given, given
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    inference = sorted(given, key=lambda i: lengths[i])
    training = get_length_grouped_indices(
        lengths, batch_size, mega_batch_mult=50, generator=torch.Generator().manual_seed(0)
    )
    return inference, training


def versions():
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


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
@click.option(
    "--order",
    type=click.Choice(["given", "grouped"]),
    default="given",
    help="Batch the reviews as given, or grouped by length (the peer at its best).",
)
def main(texts, output, max_length, batch_size, fixed_length, batches, lora_layers, dtype, order):
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

    inference_order, training_order = review_orders(tokenizer, data["texts"], order, batch_size, max_length)
    real = {
        "inference": list(
            batches_of(tokenizer, data["texts"], data["labels"], inference_order, batch_size, max_length)
        ),
        "training": list(batches_of(tokenizer, data["texts"], data["labels"], training_order, batch_size, max_length)),
    }
    rng = np.random.default_rng(0)
    ids = torch.tensor(rng.integers(4, 8000, size=(batches, batch_size, fixed_length)))
    ids[:, :, 0] = tokenizer.bos_token_id
    fixed = [
        {"input_ids": b, "attention_mask": torch.ones_like(b), "labels": torch.arange(batch_size) % 2} for b in ids
    ]

    result = {"versions": versions(), "dtype": dtype, "order": order}
    n_real, n_fixed = len(data["texts"]), batches * batch_size
    for name, run in (("inference", infer), ("training", train)):
        result[f"padded_tokens_mean_{name}"] = float(np.mean([b["input_ids"].shape[1] for b in real[name]]))
        timed_pass(run, fixed[:1])  # First-call overhead.
        result[f"fixed_{name}_reviews_per_s"] = n_fixed / timed_pass(run, fixed)
        result[f"real_{name}_reviews_per_s"] = n_real / timed_pass(run, real[name])
    result["peak_rss_mb"] = peak_rss_mb()
    Path(output).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
