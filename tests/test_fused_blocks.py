"""The fused Gemma 3 blocks compute what keras-hub's blocks compute.

(Gradients: `test_a_cached_frozen_prefix_trains_exactly_like_the_full_model` in
test_training.py trains the fused upper stack against keras-hub's functional model.)
"""

import keras
import numpy as np
import pytest

from kgemma.model.fused_blocks import run_blocks
from kgemma.model.fused_blocks import supports_fused
from tests.conftest import keras_hub_outputs
from tests.conftest import randomize_head
from tests.conftest import to_numpy

TEXTS = [
    "A fine film.",
    "Dull, long, and far too loud. Two hours I will never get back, and the plot was dull, dull, dull.",
]


def adapted(clf, seed=0):
    """Random norm scales (they start at zero), nonzero LoRA updates and a random
    head, so all of them matter to the outputs."""
    rng = np.random.default_rng(seed)
    for weight in clf.backbone.weights:
        if weight.path.endswith("norm/scale") or "normalization" in weight.path:
            weight.assign(rng.normal(scale=0.3, size=weight.shape))
    for adapter in clf.lora_adapters:
        adapter.lora_b.assign(rng.normal(scale=0.5, size=adapter.lora_b.shape))
    return randomize_head(clf)


def features_of(clf, texts=TEXTS):
    return {k: np.asarray(v) for k, v in clf.preprocessor(texts).items()}


def test_supports_text_only_gemma3_and_falls_back_for_gemma(make_classifier):
    assert supports_fused(make_classifier("gemma3").backbone)
    gemma = make_classifier("gemma")
    assert not supports_fused(gemma.backbone)
    # Asked for, the fused path is refused quietly: keras-hub's blocks run instead.
    assert not gemma.frozen_prefix(0, fused=True).fused


@pytest.mark.parametrize("targets", ["query_value", "all"])
def test_fused_blocks_equal_keras_hub_blocks_in_float32(make_classifier, targets):
    clf = adapted(make_classifier("gemma3", lora_targets=targets))
    features = features_of(clf)
    lengths = features["padding_mask"].sum(axis=1)
    # The long review runs past the tiny backbone's 4-token sliding window.
    assert lengths.max() > 4 * clf.backbone.transformer_layers[0].attention.sliding_window_size
    x = clf.backbone.token_embedding(features["token_ids"]) * np.sqrt(clf.backbone.hidden_dim)
    blocks = clf.backbone.transformer_layers
    fused = to_numpy(run_blocks(blocks, x, features["padding_mask"], fused=True))
    plain = to_numpy(run_blocks(blocks, x, features["padding_mask"], fused=False))
    valid = features["padding_mask"].astype(bool)  # Padding positions are never read.
    assert np.abs(plain[valid]).max() > 1e-2
    np.testing.assert_allclose(fused[valid], plain[valid], rtol=1e-4, atol=1e-4)
    # And the whole classifier, scored as predict_proba scores it.
    whole = keras_hub_outputs(clf, features)
    np.testing.assert_allclose(clf.scoring_model().predict_on_batch(features), whole, atol=1e-5)
    # Keras's own predict (and fit) run the classifier's call: the fused blocks.
    np.testing.assert_allclose(keras.Model.predict_on_batch(clf, features), whole, atol=1e-5)
    np.testing.assert_allclose(clf.logits_for_features(features), whole, atol=1e-5)


def test_fused_blocks_in_causal_chunks_equal_keras_hub_blocks(make_classifier):
    from kgemma.model.fused_blocks import causal_chunks

    clf = adapted(make_classifier("gemma3", lora_targets="all", sequence_length=256))
    features = features_of(clf, [TEXTS[0], TEXTS[1] * 16])  # the long one across every chunk
    assert features["padding_mask"].sum(axis=1).max() == 256 and causal_chunks(256) > 1
    x = clf.backbone.token_embedding(features["token_ids"]) * np.sqrt(clf.backbone.hidden_dim)
    blocks = clf.backbone.transformer_layers
    fused = to_numpy(run_blocks(blocks, x, features["padding_mask"], fused=True))
    plain = to_numpy(run_blocks(blocks, x, features["padding_mask"], fused=False))
    valid = features["padding_mask"].astype(bool)
    np.testing.assert_allclose(fused[valid], plain[valid], rtol=1e-4, atol=1e-4)


def test_fused_blocks_round_only_as_bfloat16_does(make_classifier):
    clf = adapted(make_classifier("gemma3", lora_targets="all"))
    half = type(clf.backbone).from_config({**clf.backbone.get_config(), "dtype": "bfloat16"})
    half.set_weights(clf.backbone.get_weights())
    other = adapted(type(clf)(backbone=half, preprocessor=clf.preprocessor, lora_targets="all"))
    features = features_of(clf)
    reference = keras_hub_outputs(other, features)
    fused = to_numpy(other.scoring_model().predict_on_batch(features))
    # As far from keras-hub's bfloat16 blocks as those are from float32 (both round).
    exact = keras_hub_outputs(clf, features)
    assert np.abs(fused - reference).max() <= 2 * np.abs(reference - exact).max() + 1e-2
    assert (fused.argmax(axis=1) == reference.argmax(axis=1)).all()


def test_scoring_models_are_reused_and_not_saved(make_classifier, tmp_path):
    clf = make_classifier("gemma3")
    assert clf.scoring_model() is clf.scoring_model()
    assert clf.scoring_model(fused=False) is not clf.scoring_model()
    clf.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert [w.path for w in restored.weights] == [w.path for w in clf.weights]


ON_TORCH = keras.backend.backend() == "torch"


@pytest.mark.skipif(
    not ON_TORCH, reason="int8 matmuls run on Keras's torch backend: make test runs this with KERAS_BACKEND=torch"
)
def test_int8_prefix_stays_close_to_float_and_follows_new_weights(make_classifier):
    clf = adapted(make_classifier("gemma3", lora_layers=1))
    features = features_of(clf)

    def relative_error():
        exact = to_numpy(clf.frozen_prefix().predict_on_batch(features))
        int8 = to_numpy(clf.frozen_prefix(int8=True).predict_on_batch(features))
        mask = features["padding_mask"].astype(bool)
        return np.linalg.norm((int8 - exact)[mask]) / np.linalg.norm(exact[mask])

    assert 0 < relative_error() < 0.03
    # New weights are quantized again, not served from the old int8 copy.
    block = clf.backbone.transformer_layers[0]
    block.gating_ffw.kernel.assign(3.0 * to_numpy(block.gating_ffw.kernel))
    assert 0 < relative_error() < 0.03
    # Scoring through int8 blocks, LoRA branches and head in float.
    whole = to_numpy(clf.scoring_model().predict_on_batch(features))
    int8 = to_numpy(clf.scoring_model(int8=True).predict_on_batch(features))
    assert 0 < np.abs(int8 - whole).max() < 0.05 * np.abs(whole).max()


@pytest.mark.skipif(
    not ON_TORCH, reason="int8 matmuls run on Keras's torch backend: make test runs this with KERAS_BACKEND=torch"
)
@pytest.mark.parametrize("onednn", [False, True], ids=["int_mm", "onednn"])
def test_compiled_int8_matmul_equals_the_eager_one_at_every_width(onednn):
    import torch

    from kgemma.model.int8 import eager_int8_matmul
    from kgemma.model.int8 import int8_kernel
    from kgemma.model.int8 import int8_matmul

    generator = torch.Generator().manual_seed(0)
    weights, scale = int8_kernel(torch.randn(64, 48, generator=generator), onednn=onednn)
    for rows in (32, 48, 80):  # batch widths: compiled for the first, then once with the width symbolic
        x = torch.randn(2, rows, 64, generator=generator).to(torch.bfloat16)
        np.testing.assert_array_equal(
            int8_matmul(x, weights, scale).float().numpy(), eager_int8_matmul(x, weights, scale).float().numpy()
        )


@pytest.mark.skipif(
    not ON_TORCH, reason="int8 matmuls run on Keras's torch backend: make test runs this with KERAS_BACKEND=torch"
)
@pytest.mark.parametrize("onednn", [False, True], ids=["int_mm", "onednn"])
def test_compiled_int8_matmul_compiles_once_per_projection_shape(onednn):
    import torch

    from kgemma.model.int8 import int8_kernel
    from kgemma.model.int8 import int8_matmul

    generator = torch.Generator().manual_seed(0)
    kernels = [int8_kernel(torch.randn(32, out, generator=generator), onednn=onednn) for out in (24, 40)]
    # Torch's graphs (and its limit of 8 a function) are per process: start from none, so
    # that every graph counted is this test's.
    torch._dynamo.reset()

    def new_graphs(batches):
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        for batch, width in batches:
            x = torch.randn(batch, width, 32, generator=generator)
            for weights, scale in kernels:
                assert int8_matmul(x, weights, scale).shape == (batch, width, scale.shape[0])
        return torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs

    # Batch and width dynamic from the first call, each projection's output width a
    # constant: a symbolic output width made the attention fed by it 2.7x slower.
    assert new_graphs(((2, 32), (2, 48), (3, 80))) == len(kernels)
    # A batch of one is a size torch always specializes: one more graph a projection
    # width, and then no more (torch runs a function eager past its 8th graph).
    assert new_graphs(((1, 48), (1, 64))) == len(kernels)
    assert new_graphs(((1, 16), (4, 96))) == 0


@pytest.mark.skipif(
    not ON_TORCH, reason="int8 matmuls run on Keras's torch backend: make test runs this with KERAS_BACKEND=torch"
)
def test_each_int8_matmul_width_has_a_graph_budget_of_its_own():
    import torch

    from kgemma.model.int8 import int8_kernel
    from kgemma.model.int8 import int8_matmul

    # A training step takes four widths, each possibly compiled twice: past 8 graphs in one
    # code object torch runs it eager. Here the limit is 2, and three widths still compile.
    torch._dynamo.reset()
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    x = torch.randn(2, 8, 32)
    with torch._dynamo.config.patch(recompile_limit=2):
        for out in (8, 24, 40):
            int8_matmul(x, *int8_kernel(torch.randn(32, out)))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs == 3


@pytest.mark.skipif(
    not ON_TORCH, reason="int8 matmuls run on Keras's torch backend: make test runs this with KERAS_BACKEND=torch"
)
def test_int8_projection_gives_its_input_an_int8_gradient_close_to_the_float_one():
    import torch

    from kgemma.model.int8 import int8_kernel
    from kgemma.model.int8 import int8_projection

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 64, generator=generator, requires_grad=True)
    kernel = torch.randn(64, 48, generator=generator, requires_grad=True)
    weights, transposed = int8_kernel(kernel), int8_kernel(kernel.t())
    onednn = weights[0].is_mkldnn  # oneDNN's packed weights on a CPU without int8 dot products
    with pytest.raises(ValueError, match="needs the transposed kernel"):
        int8_projection(x, weights, onednn=onednn)
    y = int8_projection(x, weights, transposed, onednn)
    upstream = torch.randn(y.shape, generator=generator)
    (y * upstream).sum().backward()

    def relative_error(got, exact):
        return float((got - exact).norm() / exact.norm())

    assert 0 < relative_error(y.detach(), x.detach() @ kernel.detach()) < 0.02
    assert 0 < relative_error(x.grad, upstream @ kernel.detach().t()) < 0.02  # int8, not the float product
    assert kernel.grad is None
    with torch.no_grad():  # Scoring: no autograd function, no transposed kernel needed.
        assert not int8_projection(x, weights, onednn=onednn).requires_grad


@pytest.mark.skipif(
    not ON_TORCH, reason="int8 matmuls run on Keras's torch backend: make test runs this with KERAS_BACKEND=torch"
)
def test_int8_blocks_quantize_the_transposed_kernels_only_for_a_gradient(make_classifier):
    import torch

    clf = adapted(make_classifier("gemma3", frozen_int8=True))
    features = features_of(clf)
    layer = clf.backbone.transformer_layers[0].gating_ffw
    clf.scoring_model().predict_on_batch(features)
    assert set(layer.kgemma_int8[1]) == {False}  # Scoring never needs the transpose.
    logits = clf.forward_model()(features, training=True)
    torch.autograd.grad(logits.sum(), [clf.lora_adapters[0].lora_a.value])
    assert set(layer.kgemma_int8[1]) == {False, True}


@pytest.mark.skipif(
    not ON_TORCH, reason="int8 matmuls run on Keras's torch backend: make test runs this with KERAS_BACKEND=torch"
)
def test_lora_gradients_through_int8_blocks_stay_close_to_the_float_ones(make_classifier):
    import torch

    clf = adapted(make_classifier("gemma3", frozen_int8=True))  # LoRA on every block
    features = features_of(clf)
    labels = np.array([1, 0])
    weights = [w.value for adapter in clf.lora_adapters for w in adapter.weights]

    def lora_gradient(model):
        logits = model(features, training=False)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, weights)])

    exact, int8 = lora_gradient(clf.forward_model(int8=False)), lora_gradient(clf.forward_model())
    assert float(exact.norm()) > 0
    # Quantization noise, not a different gradient: the tiny model's 16-wide rows round
    # coarsely (0.12 here, cosine 0.994), and a wrong or missing int8 gradient is off by ~1.
    assert 0 < float((int8 - exact).norm() / exact.norm()) < 0.2
    assert float(torch.nn.functional.cosine_similarity(int8, exact, dim=0)) > 0.98


@pytest.mark.skipif(
    not ON_TORCH, reason="oneDNN's int8 matmul runs on torch: make test runs this with KERAS_BACKEND=torch"
)
def test_onednn_int8_matmul_is_exact_integer_arithmetic_even_where_avx2_pairs_would_saturate():
    import torch

    from kgemma.model.int8 import ONEDNN_ZERO_POINT
    from kgemma.model.int8 import _quantized_rows
    from kgemma.model.int8 import eager_int8_matmul
    from kgemma.model.int8 import int8_kernel
    from kgemma.model.int8 import quantize_columns

    # The worst case for AVX2's 16-bit pair sums: every input at its row's maximum, every weight at its column's.
    x = torch.ones(4, 256)
    x[1] = -1.0
    kernel = torch.ones(256, 8)
    kernel[:, 1] = -1.0
    weights, scale = int8_kernel(kernel, onednn=True)
    quantized, same_scale = quantize_columns(kernel, 63.0)
    np.testing.assert_array_equal(scale.numpy(), same_scale.numpy())
    exact = (torch.full((4, 256), 127.0).double() * x.sign() @ quantized.double()) * (1 / 127.0) * scale.double()
    np.testing.assert_allclose(eager_int8_matmul(x, weights, scale).double().numpy(), exact.numpy(), rtol=1e-6)
    np.testing.assert_allclose(exact.numpy(), (x @ kernel).numpy(), rtol=1e-6)
    # oneDNN gets uint8 rows, 128 above the int8 values: given int8, it reordered the kernel every call.
    rows, _ = _quantized_rows(x, ONEDNN_ZERO_POINT)
    assert rows.dtype == torch.uint8 and ONEDNN_ZERO_POINT == 128
    np.testing.assert_array_equal(rows.numpy().astype(int) - 128, _quantized_rows(x)[0].numpy())


@pytest.mark.skipif(ON_TORCH, reason="checks the refusal off torch: make test runs this on TensorFlow and JAX")
def test_int8_is_refused_off_the_torch_backend(make_classifier):
    with pytest.raises(ValueError, match="int8 matmuls need Keras's torch backend"):
        make_classifier("gemma3").frozen_prefix(depth=0, int8=True)


def test_compiled_segments_take_only_tensors_and_numbers_on_torch_and_leave_out_tracing_hints():
    from kgemma.model.compiled import compiled_on_torch

    seen = []

    @compiled_on_torch(tracing_hints=("shape",))
    def flat_scaled(x, factor, *, shape=None):
        seen.append(shape)
        return keras.ops.reshape(x * factor, (-1,) if shape is None else shape)

    x = keras.ops.ones((2, 3))
    np.testing.assert_array_equal(to_numpy(flat_scaled(x, 2.0, shape=(6,))), np.full(6, 2.0))
    # The hint reaches the function everywhere but on torch.
    assert seen[-1] == (None if ON_TORCH else (6,))
    if ON_TORCH:
        with pytest.raises(TypeError, match="takes only tensors and numbers there; got a tuple"):
            flat_scaled(x, (2.0,))


@pytest.mark.skipif(not ON_TORCH, reason="compiled on torch only: make test runs this with KERAS_BACKEND=torch")
def test_each_grad_mode_compiles_within_a_budget_of_its_own():
    import torch

    from kgemma.model.compiled import compiled_on_torch

    @compiled_on_torch
    def doubled(x):
        return x * 2.0

    # Each grad mode compiles for a first shape and then for symbolic ones: 4 graphs in
    # all. In one code object they passed a budget of 2, which fails here (the model's
    # norms passed torch's 8 that way in a benchmark and ran eager).
    with torch._dynamo.config.patch(recompile_limit=2, fail_on_recompile_limit_hit=True):
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                for rows in (2, 3, 4):
                    x = torch.ones(rows, 5, requires_grad=grad)
                    np.testing.assert_array_equal(doubled(x).detach().numpy(), np.full((rows, 5), 2.0))


@pytest.mark.skipif(not ON_TORCH, reason="compiled on torch only: make test runs this with KERAS_BACKEND=torch")
@pytest.mark.parametrize("int8", [True, False])
def test_a_torch_block_compiles_into_one_graph_in_training_and_scoring(make_classifier, int8):
    import torch

    # A graph break splits a block into pieces that each rescale, quantize and mask in
    # passes of their own again (a `numpy.prod` in the LoRA branch and the autograd
    # functions' class statements did), with the results unchanged: only counted here.
    clf = adapted(make_classifier("gemma3", frozen_int8=int8))
    features = features_of(clf)
    torch._dynamo.reset()  # compiled again here, whatever the tests before compiled
    torch._dynamo.utils.counters.clear()
    logits = clf.forward_model()(features, training=True)  # LoRA dropout on, gradients wanted
    torch.autograd.grad(logits.sum(), [clf.lora_adapters[0].lora_a.value])
    clf.scoring_model().predict_on_batch(features)
    assert sum(torch._dynamo.utils.counters["graph_break"].values()) == 0
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2


@pytest.mark.skipif(not ON_TORCH, reason="compiled on torch only: make test runs this with KERAS_BACKEND=torch")
def test_every_adapted_block_trains_through_one_compiled_graph(make_classifier):
    import torch

    from kgemma.model import fused_blocks

    # The lowest adapted block's input comes from frozen embeddings and wants no gradient;
    # given one, it shares the other blocks' graph (each took ~20 s to compile, twice).
    clf = adapted(make_classifier("gemma3"))
    features = features_of(clf)
    fused_blocks._compiled_block.cache_clear()
    logits = clf.forward_model()(features, training=True)
    torch.autograd.grad(logits.sum(), [clf.lora_adapters[0].lora_a.value])
    assert len(clf.backbone.transformer_layers) > 1
    assert fused_blocks._compiled_block.cache_info().currsize == 1


@pytest.mark.skipif(not ON_TORCH, reason="compiled on torch only: make test runs this with KERAS_BACKEND=torch")
def test_lengths_of_one_causal_chunk_share_one_graph_from_the_first(make_classifier):
    import torch

    from kgemma.model.fused_blocks import causal_chunks

    # Left to torch, the first length compiles a static graph and the second a symbolic
    # one (each ~20-45 s for the embedded model); the second must compile nothing.
    clf = adapted(make_classifier("gemma3", sequence_length=64))
    scoring = clf.scoring_model()
    rng = np.random.default_rng(0)
    torch._dynamo.reset()

    def new_graphs(length):
        assert causal_chunks(length) == 1
        ids = rng.integers(4, 300, size=(2, length)).astype("int32")
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        scoring.predict_on_batch({"token_ids": ids, "padding_mask": np.ones_like(ids)})
        return torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs

    assert new_graphs(16) >= 1
    assert new_graphs(48) == 0
    assert new_graphs(32) == 0


def test_causal_chunks_compute_the_attention_of_one_chunk():
    from kgemma.model import fused_blocks

    rng = np.random.default_rng(0)
    batch, length, n_q, n_kv, head = 3, 23, 4, 2, 8
    padding = (np.arange(length)[None, :] < np.array([[23], [11], [1]])).astype("int32")
    q, k, v = (rng.normal(size=(batch, length, n * head)).astype("float32") for n in (n_q, n_kv, n_kv))
    context = fused_blocks._BatchContext(keras.ops.convert_to_tensor(q), keras.ops.convert_to_tensor(padding))
    angles = rng.uniform(size=(1, length, 1, head)).astype("float32")
    scales = rng.normal(size=(2, head)).astype("float32")
    tensors = [keras.ops.convert_to_tensor(a) for a in (q, k, v, np.cos(angles), np.sin(angles), *scales)]
    args = (*tensors[:5], context.attention_bias(None), *tensors[5:], 1e-6, 0.35)
    # Three uneven chunks of 23 positions (7, 8 and 8). Eager on torch (compiling both took
    # over a minute): `test_fused_blocks_in_causal_chunks_equal_keras_hub_blocks` runs them compiled.
    one, chunked = (to_numpy(fused_blocks._attend(n).__wrapped__(*args)) for n in (1, 3))
    valid = padding.astype(bool)  # Padding queries are never read.
    assert np.abs(one[valid]).max() > 0.1
    np.testing.assert_allclose(chunked[valid], one[valid], rtol=1e-5, atol=1e-5)


def test_each_chunk_count_compiles_under_a_code_object_of_its_own():
    from kgemma.model.fused_blocks import _attend

    # torch.compile's budget of 8 graphs is per code object: shared, the counts overran it.
    assert len({_attend(n).__wrapped__.__code__ for n in (1, 2, 4, 8)}) == 4


def test_causal_chunks_grow_with_the_length_and_are_one_for_an_unknown_length():
    from kgemma.model.fused_blocks import causal_chunks

    assert [causal_chunks(n) for n in (16, 223, 224, 256, 447, 448, 4096)] == [1, 1, 1, 4, 4, 8, 8]
    assert causal_chunks(None) == 1


@pytest.mark.skipif(not ON_TORCH, reason="compiled on torch only: make test runs this with KERAS_BACKEND=torch")
@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_compiled_segments_compute_what_the_eager_ones_do(dtype, tolerance):
    import torch

    from kgemma.model import fused_blocks

    generator = torch.Generator().manual_seed(0)

    def tensor(*shape, dtype=dtype):
        return torch.randn(*shape, generator=generator).to(getattr(torch, dtype))

    batch, length, n_q, n_kv, head = 2, 24, 4, 2, 8
    angles = torch.rand(1, length, 1, head, generator=generator)
    bias = torch.where(torch.rand(batch, 1, length, 1, length, generator=generator) < 0.8, 0.0, -1e9)
    attend = (tensor(batch, length, n_q * head), tensor(batch, length, n_kv * head), tensor(batch, length, n_kv * head))
    attend += (angles.cos(), angles.sin(), bias, tensor(head, dtype="float32"), tensor(head, dtype="float32"))
    calls = {
        # One chunk: `test_causal_chunks_compute_the_attention_of_one_chunk` checks chunks against it.
        fused_blocks._attend(1): (*attend, 1e-6, 0.35),
        fused_blocks._norm: (tensor(batch, length, 16), tensor(16, dtype="float32"), 1e-6),
        fused_blocks._add_normed: (tensor(batch, length, 16), tensor(batch, length, 16), tensor(16), 1e-6),
        fused_blocks._gated: (tensor(batch, length, 16), tensor(batch, length, 16)),
    }
    for segment, args in calls.items():
        compiled, eager = segment(*args), segment.__wrapped__(*args)
        assert compiled.dtype == eager.dtype == getattr(torch, dtype)
        np.testing.assert_allclose(compiled.float().numpy(), eager.float().numpy(), rtol=tolerance, atol=tolerance)
    # They ran compiled: one `torch.compile` per segment, every shape and dtype.
    from kgemma.model.compiled import torch_compiled

    assert torch_compiled.cache_info().currsize >= len(calls)


@pytest.mark.skipif(
    not ON_TORCH, reason="int8 matmuls run on Keras's torch backend: make test runs this with KERAS_BACKEND=torch"
)
def test_frozen_int8_runs_every_blocks_projections_in_int8_in_scoring_and_training(make_classifier):
    from kgemma.training import TrainingConfig
    from kgemma.training.trainer import training_model

    clf = adapted(make_classifier("gemma3", lora_layers=1, frozen_int8=True))
    features = features_of(clf)
    # Scoring is the int8 prefix (what a trainer caches) followed by the upper stack that
    # trains on it, int8 too; the classifier's own `call` stays float.
    states = clf.frozen_prefix().predict_on_batch(features)
    upper = training_model(clf, TrainingConfig(lora_layers=1), 10)[0]
    inputs = {"hidden_states": states, "padding_mask": features["padding_mask"]}
    chained = to_numpy(upper.predict_on_batch(inputs))
    np.testing.assert_allclose(clf.logits_for_features(features), chained, atol=1e-5)
    assert 0 < np.abs(chained - to_numpy(clf.upper_stack().predict_on_batch(inputs))).max()  # float by default
    np.testing.assert_allclose(to_numpy(clf(features)), clf.logits_for_features(features, int8=False), atol=1e-5)
    # Without a cached prefix, training runs the whole model with int8 projections.
    whole = training_model(clf, TrainingConfig(lora_layers=1, cache_prefix=False), 10)[0]
    assert whole is not clf and whole.int8
    np.testing.assert_allclose(to_numpy(whole.predict_on_batch(features)), chained, atol=1e-5)
    float_logits = clf.logits_for_features(features, int8=False)
    assert 0 < np.abs(clf.logits_for_features(features) - float_logits).max() < 0.05 * np.abs(float_logits).max()
    # The setting is saved (get_config, and the adapter header: both from rebuild_config),
    # so a model reloads as it was trained.
    assert clf.rebuild_config()["frozen_int8"] is True
    assert type(clf).from_config(clf.get_config()).frozen_int8
    plain = make_classifier("gemma3", lora_layers=1, frozen_int8=False)
    assert type(plain).from_config(plain.get_config()).frozen_int8 is False


@pytest.mark.skipif(ON_TORCH, reason="checks the refusal off torch: make test runs this on TensorFlow and JAX")
def test_frozen_int8_is_refused_off_the_torch_backend(make_classifier):
    with pytest.raises(ValueError, match="int8 matmuls need Keras's torch backend"):
        make_classifier("gemma3", lora_layers=1, frozen_int8=True)


def test_frozen_int8_by_default_is_on_only_where_int8_is_fastest(make_classifier, monkeypatch):
    from kgemma.model import dtypes
    from kgemma.training import TrainingConfig

    monkeypatch.setattr(dtypes, "cpu_flags", lambda: frozenset({"avx512f", "avx512_vnni"}))
    assert make_classifier("gemma3", lora_layers=1).frozen_int8 is ON_TORCH
    assert make_classifier("gemma", lora_layers=1).frozen_int8 is False  # keras-hub's blocks run no int8
    # AVX2 alone: oneDNN's int8 kernel, still faster than float32.
    monkeypatch.setattr(dtypes, "cpu_flags", lambda: frozenset({"avx", "avx2", "fma"}))
    assert make_classifier("gemma3", lora_layers=1).frozen_int8 is ON_TORCH
    # No x86 int8 kernel kgemma knows (an ARM CPU's flags, or none where the OS does not say).
    for flags in ({"fp", "asimd", "asimddp"}, set()):
        monkeypatch.setattr(dtypes, "cpu_flags", lambda flags=flags: frozenset(flags))
        assert make_classifier("gemma3", lora_layers=1).frozen_int8 is False
    with pytest.raises(ValueError, match="frozen_int8 must be True, False or None"):
        TrainingConfig(frozen_int8="yes")
