"""Convert a Gemma 3 GGUF file into keras-hub's `Gemma3Backbone` and `Gemma3Tokenizer`.

The tensor mapping and reshapes mirror keras-hub's own Hugging Face converter
(`keras_hub/src/utils/transformers/convert_gemma3.py`): GGUF stores each weight
matrix as (out, in), as Hugging Face does. tests/test_real_model.py checks the result
(parameter count, tokenizer ids, continuations of facts).
"""

import numpy as np

GGUF_MAGIC = b"GGUF"
ARCHITECTURE = "gemma3"

# SentencePiece piece types; GGUF stores SentencePiece's own numbers.
_SP_UNKNOWN = 2


def _read_gguf(path):
    """Open a GGUF file, turning parse failures into a clear error."""
    import gguf

    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(f"{path} is not a GGUF file (it does not start with 'GGUF').")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as e:  # gguf raises bare ValueError/IndexError on truncation
        raise ValueError(f"{path} is a corrupt or truncated GGUF file: {e}") from e


def _field(reader, key, default=None):
    field = reader.get_field(key)
    if field is None:
        if default is not None:
            return default
        raise ValueError(f"GGUF metadata has no '{key}'; is this a Gemma 3 model?")
    return field.contents()


def backbone_config_from_gguf(reader):
    """The `Gemma3Backbone` constructor arguments that match a GGUF's metadata."""
    arch = _field(reader, "general.architecture")
    if arch != ARCHITECTURE:
        raise ValueError(f"GGUF architecture is '{arch}'; kgemma converts '{ARCHITECTURE}' only.")
    p = f"{arch}."
    window = _field(reader, p + "attention.sliding_window", 0)
    return {
        "vocabulary_size": len(reader.get_field("tokenizer.ggml.tokens").data),
        "image_size": None,
        "num_layers": int(_field(reader, p + "block_count")),
        "num_query_heads": int(_field(reader, p + "attention.head_count")),
        "num_key_value_heads": int(_field(reader, p + "attention.head_count_kv")),
        "hidden_dim": int(_field(reader, p + "embedding_length")),
        "intermediate_dim": int(_field(reader, p + "feed_forward_length")),
        "head_dim": int(_field(reader, p + "attention.key_length")),
        "query_head_dim_normalize": True,
        "use_query_key_norm": True,
        "use_post_ffw_norm": True,
        "use_post_attention_norm": True,
        "attention_logit_soft_cap": None,
        "final_logit_soft_cap": None,
        "use_sliding_window_attention": bool(window),
        "sliding_window_size": int(window) or 1024,
        "layer_norm_epsilon": float(_field(reader, p + "attention.layer_norm_rms_epsilon")),
    }


def context_length_from_gguf(reader):
    return int(_field(reader, f"{ARCHITECTURE}.context_length"))


def sentencepiece_proto_from_gguf(reader):
    """Serialized SentencePiece model built from the GGUF vocabulary arrays."""
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    tokens = _field(reader, "tokenizer.ggml.tokens")
    scores = _field(reader, "tokenizer.ggml.scores")
    types = _field(reader, "tokenizer.ggml.token_type")
    proto = sp_pb2.ModelProto()
    ts = proto.trainer_spec
    ts.model_type = sp_pb2.TrainerSpec.BPE
    ts.vocab_size = len(tokens)
    ts.byte_fallback = True
    ids = {t: i for i, t in enumerate(tokens[:16])}
    ts.pad_id, ts.eos_id = ids["<pad>"], ids["<eos>"]
    ts.bos_id, ts.unk_id = ids["<bos>"], ids["<unk>"]
    for spec in (proto.normalizer_spec, proto.denormalizer_spec):
        spec.add_dummy_prefix = False
        spec.escape_whitespaces = True
        spec.remove_extra_whitespaces = False
    proto.normalizer_spec.name = "identity"
    for token, score, kind in zip(tokens, scores, types):
        piece = proto.pieces.add()
        piece.piece, piece.score = token, float(score)
        # GGUF marks <unk> CONTROL; SentencePiece needs exactly one UNKNOWN piece.
        piece.type = _SP_UNKNOWN if token == "<unk>" else int(kind)
    return proto.SerializeToString()


def _dequantized_tensors(reader):
    from gguf.quants import dequantize

    for tensor in reader.tensors:
        name = tensor.name.removesuffix(".weight")
        yield name, dequantize(tensor.data, tensor.tensor_type).astype("float32")


def _assign(variable, value, name):
    if tuple(variable.shape) != value.shape:
        raise ValueError(f"GGUF tensor '{name}' has shape {value.shape}, expected {tuple(variable.shape)}.")
    variable.assign(value)


def _load_weights(backbone, reader):
    heads_q, heads_kv = backbone.num_query_heads, backbone.num_key_value_heads
    head_dim, hidden = backbone.head_dim, backbone.hidden_dim
    seen = set()

    def heads_first(heads):  # (heads * head_dim, hidden) -> (heads, hidden, head_dim)
        return lambda x: x.reshape(heads, head_dim, hidden).transpose(0, 2, 1)

    for name, w in _dequantized_tensors(reader):
        seen.add(name)
        if name == "token_embd":
            _assign(backbone.get_layer("token_embedding").embeddings, w, name)
            continue
        if name == "output_norm":  # GGUF norms already include Gemma's +1.
            _assign(backbone.get_layer("final_normalization").scale, w - 1.0, name)
            continue
        _, index, part = name.split(".")
        block = backbone.get_layer(f"decoder_block_{index}")
        attention = block.attention
        targets = {
            "attn_norm": (block.pre_attention_norm.scale, lambda x: x - 1.0),
            "post_attention_norm": (block.post_attention_norm.scale, lambda x: x - 1.0),
            "ffn_norm": (block.pre_ffw_norm.scale, lambda x: x - 1.0),
            "post_ffw_norm": (block.post_ffw_norm.scale, lambda x: x - 1.0),
            "attn_q_norm": (attention.query_norm.scale, lambda x: x - 1.0),
            "attn_k_norm": (attention.key_norm.scale, lambda x: x - 1.0),
            "attn_q": (attention.query_dense.kernel, heads_first(heads_q)),
            "attn_k": (attention.key_dense.kernel, heads_first(heads_kv)),
            "attn_v": (attention.value_dense.kernel, heads_first(heads_kv)),
            "attn_output": (
                attention.output_dense.kernel,
                lambda x: x.reshape(hidden, heads_q, head_dim).transpose(1, 2, 0),
            ),
            "ffn_gate": (block.gating_ffw.kernel, np.transpose),
            "ffn_up": (block.gating_ffw_2.kernel, np.transpose),
            "ffn_down": (block.ffw_linear.kernel, np.transpose),
        }
        if part not in targets:
            raise ValueError(f"GGUF tensor '{name}' has no place in a Gemma3Backbone.")
        variable, transform = targets[part]
        _assign(variable, transform(w), name)
    expected = 2 + 13 * backbone.num_layers
    if len(seen) != expected:
        raise ValueError(f"GGUF holds {len(seen)} weight tensors, a complete model has {expected}.")


def convert_gguf(path):
    """Load a Gemma 3 GGUF file as `(Gemma3Backbone, Gemma3Tokenizer, context_length)`.

    Quantized tensors are dequantized to float32.
    """
    import keras_hub

    reader = _read_gguf(path)
    config = backbone_config_from_gguf(reader)
    tokenizer = keras_hub.models.Gemma3Tokenizer(proto=sentencepiece_proto_from_gguf(reader), has_vision_tokens=False)
    backbone = keras_hub.models.Gemma3Backbone(**config, dtype="float32")
    try:
        _load_weights(backbone, reader)
    except (ValueError, IndexError) as e:
        raise ValueError(f"{path} could not be converted: {e}") from e
    return backbone, tokenizer, context_length_from_gguf(reader)
