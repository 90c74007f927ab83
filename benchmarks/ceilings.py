"""Matrix-multiply ceilings of this machine through one framework, as JSON.

    python benchmarks/ceilings.py tensorflow      # or: torch, numpy

A square matmul of 2048 (best of 5 after a warm-up, within a time budget) in float32, bfloat16 and int8
(int8 x int8 -> int32: TensorFlow's `matmul(output_type=int32)`, torch's `_int_mm`), and on torch
oneDNN's int8 matmul (`int8_onednn`, float32 out), which kgemma's int8 blocks use on a CPU
without int8 dot-product instructions.
speed.py runs it once per framework in a subprocess, so no two thread pools meet,
and takes the best bfloat16 figure of any framework as the bfloat16 ceiling.
"""

import json
import os
import sys
import time

import numpy as np

N = 2048


def best_gflops(run, repeats=5, budget=10.0):
    """GFLOP/s of the best of `repeats` timed calls after a warm-up, stopping once the
    calls pass `budget` seconds. Where a format has no fast path one call of 2048^3 takes
    many seconds (torch's bfloat16 and int8 on an AVX2-only CPU: 0.3 and 1.4 GFLOP/s, 57 s
    and 12 s a call); a warm-up that long is itself the measurement."""
    seconds = [timed(run)]
    if seconds[0] < budget:
        seconds = []
        while len(seconds) < repeats and sum(seconds) < budget:
            seconds.append(timed(run))
    return round(2 * N**3 / min(seconds) / 1e9, 1)


def timed(run):
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def numpy_ceilings(a, _):
    return {"float32": best_gflops(lambda: a @ a)}


def tensorflow_ceilings(a, q):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    result = {"version": tf.__version__}
    for name, dtype in (("float32", tf.float32), ("bfloat16", tf.bfloat16)):
        x = tf.constant(a, dtype=dtype)
        step = tf.function(lambda x=x: tf.matmul(x, x))
        result[name] = best_gflops(lambda: step().numpy())
    xq = tf.constant(q)
    step = tf.function(lambda: tf.linalg.matmul(xq, xq, output_type=tf.int32))
    result["int8"] = best_gflops(lambda: step().numpy())
    return result


def torch_ceilings(a, q):
    import torch

    torch.set_num_threads(os.cpu_count())
    result = {"version": torch.__version__}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        x = torch.tensor(a, dtype=dtype)
        result[name] = best_gflops(lambda: x @ x)
    xq = torch.tensor(q)
    result["int8"] = best_gflops(lambda: torch._int_mm(xq, xq))
    # kgemma's own oneDNN path (weights packed as kgemma packs them); kgemma runs it on torch.
    os.environ["KERAS_BACKEND"] = "torch"
    from kgemma.model.int8 import as_onednn_rows
    from kgemma.model.int8 import int8_kernel
    from kgemma.model.int8 import onednn_int8_op

    packed, scale = int8_kernel(torch.tensor(a), onednn=True)
    xu = as_onednn_rows(xq)
    result["int8_onednn"] = best_gflops(lambda: onednn_int8_op()(xu, packed, scale))
    return result


def main(framework):
    rng = np.random.default_rng(0)
    a = rng.random((N, N), dtype=np.float32)
    q = rng.integers(-100, 100, size=(N, N)).astype(np.int8)
    measure = {"numpy": numpy_ceilings, "tensorflow": tensorflow_ceilings, "torch": torch_ceilings}[framework]
    print(json.dumps({"framework": framework, "gflops": measure(a, q)}))


if __name__ == "__main__":
    main(sys.argv[1])
