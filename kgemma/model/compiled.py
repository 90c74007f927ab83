"""`torch.compile` for the small elementwise functions where eager torch pays a pass over
memory per step (norms, rotary, softmax, GELU, int8 rescaling, dropout masks).

On Keras's torch backend each eager op of such a function reads and writes the whole
tensor; Inductor fuses them into a loop or two (docs/performance.md: the fused blocks'
segments took 28% of the eager forward). TensorFlow and JAX run the same functions as
they are: XLA over the same segments inside TensorFlow's graph was slower, measured.
"""

import functools
import numbers
import types

import keras


def compiled_on_torch(function=None, *, tracing_hints=()):
    """`function` under `torch.compile` on the torch backend, as it is elsewhere. The
    eager function stays reachable as `__wrapped__`. Called while torch compiles a
    larger function, it is traced into that one.

    On torch only tensors and numbers go in: torch turns the ints inside a structure
    (a tuple of shapes) into symbolic inputs, whose guards torch 2.13's FX graph cache
    could not evaluate for a backward graph (`KeyError: 'shapes'`, a CI run at 5df9a42).
    Any other argument raises a `TypeError` there.

    Args:
        function: tensors and numbers in, tensors out. Without it, a decorator.
        tracing_hints: names of keyword arguments that only spare graph ops while
            TensorFlow traces (shapes packed once per batch). On torch they are left
            out, and `function` builds them from its tensors, as it must when they
            are missing.

    Example:
    ```python
    @compiled_on_torch(tracing_hints=("shape",))
    def flat_doubled(x, *, shape=None):
        return keras.ops.reshape(x * 2.0, (-1,) if shape is None else shape)

    flat_doubled(keras.ops.ones((2, 3)), shape=(6,))  # on torch, compiled and reshaped to (-1,)
    ```
    """

    def decorate(function):
        @functools.wraps(function)
        def run(*args, **kwargs):
            if keras.backend.backend() != "torch":
                return function(*args, **kwargs)
            import torch

            kwargs = {name: value for name, value in kwargs.items() if name not in tracing_hints}
            if torch.compiler.is_compiling():
                # Inside a compiled region (a whole fused block): traced in place, so that
                # Inductor fuses it with its neighbours.
                return function(*args, **kwargs)
            _check_compilable(function, (*args, *kwargs.values()))
            return _compiled_for_grad_mode(function, torch.is_grad_enabled())(*args, **kwargs)

        return run

    return decorate if function is None else decorate(function)


def _check_compilable(function, values):
    for value in values:
        if not (keras.ops.is_tensor(value) or isinstance(value, numbers.Number)):
            raise TypeError(
                f"{function.__qualname__} is compiled on torch, and takes only tensors and numbers "
                f"there; got a {type(value).__name__}. Name it in `tracing_hints`, or pass its "
                "values as tensors."
            )


def with_own_code(function, name):
    """`function` under a code object of its own, named `name`. torch.compile keeps its
    graphs per code object, at most 8 (its recompile limit) and then runs the code eager;
    closures made by one factory share one code object, and so that one budget. (The
    attention's chunk counts, each compiled with and without gradients and for static and
    then symbolic shapes, took 16 graphs in one code object, and the rest ran eager.)"""
    own = types.FunctionType(
        function.__code__.replace(co_name=name), function.__globals__, name, function.__defaults__, function.__closure__
    )
    own.__kwdefaults__, own.__doc__ = function.__kwdefaults__, function.__doc__
    return own


@functools.cache
def _compiled_for_grad_mode(function, grad_enabled):
    """`function` compiled for one grad mode, under a code object of its own. torch
    compiles a function once with gradients and once without, each for static and then
    symbolic shapes, and once more for a batch of one (a dim of 1 is specialized): more
    than its 8 graphs per code object, after which the norms ran eager in a benchmark
    that trained and then scored (`recompile_limit (8)`, docs/performance.md). One code
    object per grad mode gives each its own budget."""
    mode = "with_grad" if grad_enabled else "no_grad"
    return torch_compiled(with_own_code(function, f"{function.__name__}_{mode}"))


@functools.cache
def torch_compiled(function):
    """`torch.compile(function)`, built once per function."""
    import torch

    # Torch's automatic dynamic shapes: compiled for the first shapes, then once more with
    # only the dims that changed (batch, width) symbolic. The model's own dims (hidden,
    # heads, head size) stay constants; with `dynamic=True` they were symbolic too, and the
    # embedded model's forward ran at 1.48 reviews/s instead of 1.94 (8 x 256, float32,
    # AVX2; docs/performance.md). Two compiles per function, not one per shape.
    return torch.compile(function, dynamic=None)


def built_once(factory):
    """`factory`, called on first use and its result kept (a class that needs torch, say).

    Not `functools.cache`: torch.compile looks past that cache and traces the factory
    again, and a class built inside a compiled region breaks its graph; a value kept in
    a dict it reads as a constant. Called first inside a compiled region, the factory
    runs there once, and that graph is compiled again without it."""
    built = {}

    @functools.wraps(factory)
    def get():
        if not built:
            built["value"] = factory()
        return built["value"]

    return get
