"""One Gemma 3 270M projection in float and in int8 on torch, at the model's shapes (issue 20).

Where int8 loses its speed: the int8 matmul alone (`torch._int_mm` on a CPU with int8
dot-product instructions, oneDNN's int8 matmul elsewhere: what `int8_kernel` picks),
`eager_int8_matmul` (the input quantized per row in eager torch around it) and kgemma's
`int8_matmul`, the same function under `torch.compile`, which fuses the quantization and
the rescale into a loop or two each instead of a pass over memory per elementwise op. The
float matmul runs in the CPU's fastest dtype (bfloat16 where it has bfloat16 units, else
float32). Prints GFLOP/s (best of `--repeats` after a warm-up) and the largest difference
from the float result, as JSON.

    KERAS_BACKEND=torch python benchmarks/int8_projection.py --tokens 2048
"""

import json
import os
import time

import click

# (in, out) of the projections in one block: query, key/value, output, gate/up, down.
SHAPES = ((640, 1024), (640, 256), (1024, 640), (640, 2048), (2048, 640))


def best_seconds(fn, repeats):
    fn()  # warm-up (and, for the compiled function, its compile)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


@click.command()
@click.option("--tokens", default=2048, show_default=True, help="Rows of the input: batch x length.")
@click.option("--repeats", default=20, show_default=True)
def main(tokens, repeats):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import torch

    from kgemma.model.dtypes import fastest_dtype
    from kgemma.model.int8 import as_onednn_rows
    from kgemma.model.int8 import eager_int8_matmul as int8_matmul
    from kgemma.model.int8 import has_int8_dot_products
    from kgemma.model.int8 import int8_kernel
    from kgemma.model.int8 import int8_matmul as compiled
    from kgemma.model.int8 import onednn_int8_op

    dtype = fastest_dtype()
    kernel = "int_mm" if has_int8_dot_products() else "onednn"
    generator = torch.Generator().manual_seed(0)
    rows = []
    for n_in, n_out in SHAPES:
        x = torch.randn(tokens, n_in, generator=generator).to(getattr(torch, dtype))
        w = (torch.randn(n_in, n_out, generator=generator) / n_in**0.5).to(getattr(torch, dtype))
        weights, scale = int8_kernel(w)
        xq = torch.randint(-127, 127, (tokens, n_in), dtype=torch.int8, generator=generator)
        xu = as_onednn_rows(xq)
        alone = (
            (lambda: torch._int_mm(xq, weights))
            if kernel == "int_mm"
            else (lambda: onednn_int8_op()(xu, weights, scale))
        )
        reference = (x @ w).float()
        flops = 2 * tokens * n_in * n_out
        with torch.inference_mode():
            row = {"shape": [tokens, n_in, n_out]}
            for name, fn in (
                (dtype, lambda: x @ w),
                (f"{kernel}_alone", alone),
                ("int8_eager", lambda: int8_matmul(x, weights, scale)),
                ("int8_compiled", lambda: compiled(x, weights, scale)),
            ):
                row[name] = round(flops / best_seconds(fn, repeats) / 1e9, 1)
            for name, fn in (("int8_eager", int8_matmul), ("int8_compiled", compiled)):
                error = (fn(x, weights, scale).float() - reference).abs().max().item()
                row[f"{name}_max_error"] = round(error, 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}))


if __name__ == "__main__":
    main()
