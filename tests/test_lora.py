import keras
import numpy as np
import pytest

from kgemma import LoRAAdapter
from tests.conftest import randomize_head
from tests.conftest import to_numpy

HEAD = 2 * 16 + (16 * 2 + 2)  # pooled LayerNorm + dense head of the tiny models
# LoRA parameters of the tiny models at rank 8, counted by hand: per layer,
# query A(16x8) B(8x2x8) = 256, value/key A(16x8) B(8x1x8) = 192, output A(2x8x8) B(8x16) = 256,
# Gemma 3 gates A(16x8) B(8x32) = 384 each, down A(32x8) B(8x16) = 384;
# Gemma 1/2 halves the gate width: gates A(16x8) B(8x16) = 256 each, down A(16x8) B(8x16) = 256.
EXPECTED_LORA = {
    ("gemma3", "query_value"): 2 * (256 + 192),
    ("gemma3", "attention"): 2 * (256 + 192 + 192 + 256),
    ("gemma3", "all"): 2 * (256 + 192 + 192 + 256 + 3 * 384),
    ("gemma", "query_value"): 2 * (256 + 192),
    ("gemma", "attention"): 2 * (256 + 192 + 192 + 256),
    ("gemma", "all"): 2 * (256 + 192 + 192 + 256 + 3 * 256),
}


def count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


# keras-hub's Gemma projections: query, key and value, attention output, feed-forward.
GEMMA_EINSUMS = [
    ("btd,ndh->btnh", (4, 8, 3), (2, 5, 8)),
    ("bsd,kdh->bskh", (1, 8, 3), (2, 5, 8)),
    ("btnh,nhd->btd", (4, 3, 8), (2, 5, 4, 3)),
    ("btd,df->btf", (8, 6), (2, 5, 8)),
]


@pytest.mark.parametrize("equation,kernel_shape,input_shape", GEMMA_EINSUMS)
def test_lora_branch_equals_merged_kernel_update(equation, kernel_shape, input_shape):
    adapter = LoRAAdapter(equation, kernel_shape, rank=2, alpha=6.0, dropout=0.0)
    adapter.build()
    rng = np.random.default_rng(0)
    adapter.lora_b.assign(rng.normal(size=adapter.b_shape))
    x = rng.normal(size=input_shape).astype("float32")
    # Reference: the classic "W + (alpha / r) * A @ B" delta, built in the kernel's own axis order.
    a = to_numpy(adapter.lora_a).reshape(-1, 2)
    b = to_numpy(adapter.lora_b).reshape(2, -1)
    x_axes, rest = equation.split(",")
    kernel_axes, out_axes = rest.split("->")
    in_axes = [c for c in kernel_axes if c in x_axes]
    dims = dict(zip(kernel_axes, kernel_shape))
    delta = (a @ b).reshape([dims[c] for c in in_axes] + [dims[c] for c in kernel_axes if c not in in_axes])
    delta_axes = "".join(in_axes) + "".join(c for c in kernel_axes if c not in in_axes)
    delta = np.einsum(f"{delta_axes}->{kernel_axes}", delta) * (6.0 / 2)
    expected = np.einsum(equation, x, delta)
    np.testing.assert_allclose(to_numpy(adapter(x)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("targets", ["query_value", "attention", "all"])
def test_trainable_parameter_counts_are_exact(make_classifier, kind, targets):
    clf = make_classifier(kind, lora_targets=targets)
    assert count(clf.trainable_weights) == EXPECTED_LORA[(kind, targets)] + HEAD
    assert count(clf.weights) == clf.backbone.count_params() + EXPECTED_LORA[(kind, targets)] + HEAD


def test_untrained_head_scores_every_review_one_half(make_classifier, kind):
    np.testing.assert_allclose(make_classifier(kind).predict_proba(["Great.", "Awful, truly."]), 0.5)


def test_rank_zero_trains_the_head_alone(make_classifier):
    clf = make_classifier(lora_rank=0)
    assert clf.lora_adapters == []
    assert count(clf.trainable_weights) == HEAD


def test_fresh_adapters_leave_the_backbone_output_unchanged(make_classifier, kind):
    clf = make_classifier(kind)
    x = clf.preprocessor(["A wonderful film.", "Dull and far too long."])
    with_lora = to_numpy(clf.backbone(x))
    for adapter in clf.lora_adapters:
        adapter.lora_b.assign(np.ones(adapter.b_shape))
    changed = to_numpy(clf.backbone(x))
    assert not np.allclose(with_lora, changed)
    for adapter in clf.lora_adapters:
        adapter.lora_b.assign(np.zeros(adapter.b_shape))
    # B = 0 gives back exactly the frozen model.
    np.testing.assert_allclose(to_numpy(clf.backbone(x)), with_lora, rtol=1e-6)


def test_a_training_step_changes_only_lora_and_head_weights(make_classifier, kind):
    clf = make_classifier(kind)
    clf.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = {w.path: np.array(w.numpy()) for w in clf.weights}
    trainable = {w.path for w in clf.trainable_weights}
    # Two steps: the head's kernel starts at zero, so LoRA gets gradients from the second.
    for _ in range(2):
        clf.train_on_batch(
            ["A wonderful film.", "Dull and far too long.", "Loved it.", "Awful."], np.array([1, 0, 1, 0])
        )
    changed = {w.path for w in clf.weights if not np.array_equal(before[w.path], w.numpy())}
    assert changed, "nothing trained"
    assert changed <= trainable
    lora_paths = {w.path for a in clf.lora_adapters for w in a.weights}
    assert changed & lora_paths, "no LoRA weight moved"
    assert all(not w.trainable for w in clf.backbone.weights)


def test_bad_lora_settings_are_refused(make_classifier):
    with pytest.raises(ValueError, match="lora_layers must be an integer from 1 to 2"):
        make_classifier(lora_layers=3)
    with pytest.raises(ValueError, match="lora_targets must be one of"):
        make_classifier(lora_targets="everything")
    with pytest.raises(ValueError, match="lora_rank must be a non-negative integer"):
        make_classifier(lora_rank=-1)


def test_lora_layers_adapts_only_the_top_blocks(make_classifier, kind):
    everywhere, top = make_classifier(kind), make_classifier(kind, lora_layers=1)
    assert [a.name for a in everywhere.lora_adapters][2:] == [a.name for a in top.lora_adapters]
    assert (everywhere.frozen_depth, top.frozen_depth) == (0, 1)
    assert make_classifier(kind, lora_rank=0).frozen_depth == 2


def test_frozen_prefix_and_upper_stack_compute_the_classifier(make_classifier, kind):
    from tests.conftest import randomize_head

    clf = randomize_head(make_classifier(kind, lora_layers=1))
    for adapter in clf.lora_adapters:  # Nonzero updates, so the adapters matter.
        adapter.lora_b.assign(np.random.default_rng(0).normal(size=adapter.lora_b.shape))
    features = {
        k: np.asarray(v) for k, v in clf.preprocessor(["A fine film.", "Dull, long, and far too loud."]).items()
    }
    states = clf.frozen_prefix()(features)
    split = clf.upper_stack()({"hidden_states": states, "padding_mask": features["padding_mask"]})
    whole = to_numpy(clf(features, training=False))
    assert np.abs(whole).max() > 1e-3
    np.testing.assert_allclose(to_numpy(split), whole, atol=1e-5)
    assert sorted(w.path for w in clf.upper_stack().trainable_weights) == sorted(w.path for w in clf.trainable_weights)
    # A split below the first adapted block runs the frozen blocks above it in the upper stack.
    lower = clf.upper_stack(0)(
        {"hidden_states": clf.frozen_prefix(0)(features), "padding_mask": features["padding_mask"]}
    )
    np.testing.assert_allclose(to_numpy(lower), whole, atol=1e-5)
    with pytest.raises(ValueError, match="split depth must be from 0 to 1"):
        clf.frozen_prefix(2)


@pytest.mark.slow  # About 20-40 s: left out of `make test-fast`.
def test_lora_is_never_silently_dropped_by_a_quantized_layer(make_classifier):
    from kgemma.model.fused_blocks import supports_fused

    clf = make_classifier("gemma3")
    # Quantized after attaching: Keras would route around the adapter, so the layer refuses to run.
    clf.backbone.quantize("int8")
    assert not supports_fused(clf.backbone)
    with pytest.raises(ValueError, match="was quantized after a LoRA adapter was attached"):
        clf.predict_proba(["A fine film."])
    # Attaching to a quantized backbone is refused at once.
    quantized = make_classifier("gemma3", lora_rank=0).backbone
    quantized.quantize("int8")
    with pytest.raises(
        ValueError, match="is quantized \\(int8\\); kgemma's LoRA adapters run beside float kernels only"
    ):
        type(clf)(backbone=quantized, preprocessor=clf.preprocessor)


def test_upper_stack_runs_in_the_backbone_dtype(make_classifier):
    """In bfloat16 the cached prefix's states go through the upper blocks in bfloat16,
    as in the whole classifier (a float32 model would cast them up): same outputs."""
    clf = make_classifier(dtype="bfloat16", lora_layers=1)
    for adapter in clf.lora_adapters:
        adapter.lora_b.assign(np.random.default_rng(0).normal(size=adapter.lora_b.shape))
    features = {
        k: np.asarray(v) for k, v in clf.preprocessor(["A fine film.", "Dull, long, and far too loud."]).items()
    }
    states = clf.frozen_prefix()(features)
    assert keras.backend.standardize_dtype(states.dtype) == "bfloat16"
    upper = clf.upper_stack()
    assert upper.compute_dtype == "bfloat16"
    split = upper({"hidden_states": states, "padding_mask": features["padding_mask"]})
    whole = clf.scoring_model()(features)
    np.testing.assert_array_equal(to_numpy(split), to_numpy(whole))


@pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="kgemma's own dropout runs on torch: make test runs this with KERAS_BACKEND=torch",
)
def test_torch_dropout_drops_at_its_rate_keeps_the_mean_and_repeats_with_its_seed():
    import torch

    from kgemma.model.dropout import torch_dropout

    x = torch.ones(64, 50, 33, requires_grad=True)  # an odd size: the last int64 draw is cut
    y = torch_dropout(x, 0.25, keras.random.SeedGenerator(7))
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.25) < 0.01 and abs(y.mean().item() - 1.0) < 0.02
    assert torch.equal(y, torch_dropout(x, 0.25, keras.random.SeedGenerator(7)))
    assert not torch.equal(y, torch_dropout(x, 0.25, keras.random.SeedGenerator(8)))
    y.sum().backward()  # the gradient is the mask, scaled
    np.testing.assert_allclose(x.grad.numpy(), y.detach().numpy())
    # The mask is a function of the seed alone: compiled (as in a fused block) or eager, the same.
    from kgemma.model.dropout import _keep
    from kgemma.model.dropout import hashed_dropout

    seed = torch.tensor(12345, dtype=torch.int64)
    x = torch.randn(3, 40, 17)
    eager = _keep.__wrapped__(x, seed, round(0.25 * 65536), 65536 / (65536 - round(0.25 * 65536)))
    assert torch.equal(hashed_dropout(x, 0.25, seed), eager)


def test_head_and_lora_dropout_masks_follow_their_layers_seeds_not_the_global_generator(make_classifier):
    clf = randomize_head(make_classifier(lora_layers=1))
    adapter = clf.lora_adapters[0]
    adapter.lora_b.assign(np.random.default_rng(0).normal(size=adapter.lora_b.shape))
    generators = (clf.output_dropout.seed_generator, adapter.dropout_layer.seed_generator)
    start = [keras.ops.convert_to_numpy(g.state) for g in generators]
    rng = np.random.default_rng(1)
    pooled = rng.normal(size=(4, clf.backbone.hidden_dim)).astype("float32")
    inputs = rng.normal(size=(4, 6, clf.backbone.hidden_dim)).astype("float32")

    def masks(global_seed):
        keras.utils.set_random_seed(global_seed)  # torch's global generator too
        for generator, state in zip(generators, start):
            generator.state.assign(state)
        return [to_numpy(clf.head(pooled, training=True)), to_numpy(adapter(inputs, training=True))]

    first, again = masks(1), masks(2)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], to_numpy(clf.head(pooled, training=True)))  # It drops, and draws anew.


@pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="kgemma's own low-rank matmuls run on torch: make test runs this with KERAS_BACKEND=torch",
)
@pytest.mark.parametrize("equation,kernel_shape,input_shape", GEMMA_EINSUMS)
def test_torch_low_rank_update_gives_the_einsums_values_and_gradients(equation, kernel_shape, input_shape):
    import torch

    adapter = LoRAAdapter(equation, kernel_shape, rank=2, alpha=6.0, dropout=0.0)
    adapter.build()
    adapter.lora_b.assign(np.random.default_rng(0).normal(size=adapter.b_shape))
    a, b = adapter.lora_a.value, adapter.lora_b.value
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out_shape = np.einsum(equation, np.zeros(input_shape), np.zeros(kernel_shape)).shape
    grad = torch.randn(*out_shape, generator=torch.Generator().manual_seed(2))

    def values_and_gradients(update):
        for tensor in (x, a, b):
            tensor.grad = None
        update.backward(grad)
        return [t.detach().numpy().copy() for t in (update, x.grad, a.grad, b.grad)]

    fast = adapter(x)
    assert "LowRankUpdateBackward" in _graph_names(fast)  # the fast path ran
    einsums = keras.ops.einsum(adapter.b_equation, keras.ops.einsum(adapter.a_equation, x, a), b) * 3.0
    for got, expected in zip(values_and_gradients(fast), values_and_gradients(einsums)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def _graph_names(tensor, depth=3):
    """The names of the autograd nodes within `depth` steps of `tensor`."""
    names, frontier = set(), [tensor.grad_fn]
    for _ in range(depth):
        frontier = [node for node in frontier if node is not None]
        names |= {type(node).__name__ for node in frontier}
        frontier = [child for node in frontier for child, _ in node.next_functions]
    return names
