"""Involution layer (Li et al., "Involution: Inverting the Inherence of
Convolution for Visual Recognition", CVPR 2021)."""

from __future__ import annotations

import contextlib

import keras
from keras import backend, ops

from layers import aggregation
from layers.aggregation import auto
from layers.aggregation._common import Generation
from layers.pooling import average_pool_same

_RESERVED = ("auto",)
# The layer's stages as profiler ranges name them (see `stage`): generation and
# aggregation, or one range when a kernel does both (Implementation.generates).
STAGES = ("kernel_generation", "aggregation")
FUSED_STAGE = "generation_and_aggregation"


def _positive_int(name: str, value) -> int:
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(
                f"Involution supports square windows only: `{name}` must be a positive "
                f"integer or a pair of equal positive integers. Received: {name}={value!r}"
            )
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return value


@contextlib.contextmanager
def stage(name: str):
    """Name a stage of the layer so that it shows in profiler traces.

    `keras.name_scope` becomes a TensorFlow name scope (op names in the trace)
    or a JAX named scope (HLO op metadata, which GPU traces show). PyTorch ops
    are grouped under a `torch.profiler.record_function` range; JAX and
    TensorFlow also get a profiler range (`jax.profiler.TraceAnnotation`,
    `tf.profiler.experimental.Trace`) around the stage's Python, which spans
    its ops in a step run op by op: XLA's CPU events carry no scope, and
    TensorBoard's streaming trace viewer names TensorFlow's op events by their
    type only.
    """
    with keras.name_scope(name):
        name_backend = backend.backend()
        if name_backend == "torch":
            import torch

            with torch.profiler.record_function(name):
                yield
        elif name_backend == "jax":
            import jax

            with jax.profiler.TraceAnnotation(name):
                yield
        elif name_backend == "tensorflow":
            import tensorflow as tf

            with tf.profiler.experimental.Trace(name):
                yield
        else:
            yield


def _device_kind(x) -> str:
    name = backend.backend()
    if name == "torch":
        return "gpu" if x.device.type == "cuda" else "cpu"
    if name == "jax":
        import jax

        return "gpu" if jax.default_backend() in ("gpu", "cuda", "rocm") else jax.default_backend()
    import tensorflow as tf

    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


@keras.saving.register_keras_serializable(package="involution_bench")
class Involution(keras.layers.Layer):
    """2D involution layer: a location-specific, channel-shared kernel.

    For every output pixel a `kernel_size` x `kernel_size` kernel is generated
    from the input at that pixel (average-pooled by `strides` when
    `strides > 1`): a 1x1 convolution to `max(1, C // reduction_ratio)`
    channels, batch normalization, ReLU and a 1x1 convolution to
    `kernel_size**2 * groups` channels. Each kernel is shared by the channels
    of its group: channel `c` belongs to group `c // (C // groups)`, and
    generated channel `g * K * K + i * K + j` weighs window offset `(i, j)` of
    group `g` (the official implementation's layout). Windows and padding are
    those of `keras.layers.Conv2D(padding="same", strides=strides)`.

    Args:
        kernel_size: int, the height and width of the generated kernels.
        strides: int, the stride of the windows. Defaults to `1`.
        groups: int, number of channel groups sharing one kernel; must
            divide the number of input channels. Defaults to `1`.
        reduction_ratio: int, channel reduction of the kernel-generation
            bottleneck. Defaults to `4`.
        implementation: str, how the aggregation is computed: one of
            `Involution.implementations()` or `"auto"`, which picks the
            fastest measured implementation for the backend, device and
            mode (training or inference). All compute the same function.
        return_kernel: bool, if `True` the layer returns
            `(output, kernel)` with the generated kernels of shape
            `(batch, out_height, out_width, groups, kernel_size, kernel_size)`.
        kernel_initializer: initializer of the two 1x1 convolution kernels.
        bias_initializer: initializer of the two 1x1 convolution biases.
        data_format: only `"channels_last"` (or `None` when the Keras
            config says `"channels_last"`) is supported.
        **kwargs: base layer arguments, e.g. `name` and `dtype`.

    Input shape:
        4D tensor `(batch_size, height, width, channels)`. Height and width
        may differ from call to call.

    Output shape:
        4D tensor `(batch_size, ceil(height / strides),
        ceil(width / strides), channels)`.

    Example:

    >>> x = np.random.rand(4, 32, 32, 64).astype("float32")
    >>> y = Involution(kernel_size=7, groups=4, strides=2)(x)
    >>> print(y.shape)
    (4, 16, 16, 64)
    """

    def __init__(
        self,
        kernel_size,
        strides=1,
        groups=1,
        reduction_ratio=4,
        implementation="auto",
        return_kernel=False,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        data_format=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.kernel_size = _positive_int("kernel_size", kernel_size)
        self.strides = _positive_int("strides", strides)
        self.groups = _positive_int("groups", groups)
        self.reduction_ratio = _positive_int("reduction_ratio", reduction_ratio)
        usable = self.implementations()
        if implementation not in _RESERVED + tuple(usable):
            if implementation in aggregation.IMPLEMENTATIONS:
                impl = aggregation.get(implementation)
                why = (
                    f"it needs the Python package(s) {', '.join(impl.missing())}"
                    if backend.backend() in impl.backends
                    else f"it runs on the {', '.join(impl.backends)} backend(s), "
                    f"not on {backend.backend()}"
                )
                raise ValueError(
                    f"Involution implementation {implementation!r} is not available: {why}. "
                    f"Use one of {['auto', *usable]}. Received: implementation={implementation!r}"
                )
            raise ValueError(
                f"Unknown involution implementation. Use one of {['auto', *usable]}. "
                f"Received: implementation={implementation!r}"
            )
        self.implementation = implementation
        self.return_kernel = bool(return_kernel)
        data_format = data_format or keras.config.image_data_format()
        if data_format != "channels_last":
            raise ValueError(
                "Involution supports only channels-last inputs (batch, height, width, "
                "channels); transpose the input or set "
                "keras.config.set_image_data_format('channels_last'). "
                f"Received: data_format={data_format!r}"
            )
        self.data_format = data_format
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    @staticmethod
    def implementations() -> list[str]:
        """Names of the aggregation implementations usable on this backend."""
        return aggregation.names()

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "Involution expects a 4D input (batch, height, width, channels). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                "Involution needs a known number of input channels (the last axis). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        if channels % self.groups:
            raise ValueError(
                "The number of input channels must be divisible by `groups`. "
                f"Received: groups={self.groups} for {channels} input channels"
            )
        # Import the aggregation's module now, outside any compiled call: torch.compile
        # cannot trace an import, and it would keep that graph break for the process.
        names = auto.choices(backend.backend()) if self.implementation == "auto" else (self.implementation,)
        for name in names:
            if aggregation.get(name).available():
                aggregation.get(name).module()
        self.channels = channels
        self.reduced_channels = max(1, channels // self.reduction_ratio)
        conv_args = dict(
            kernel_size=1,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            dtype=self.dtype_policy,
        )
        # Creation order fixes get_weights(): reduce kernel, reduce bias,
        # BN gamma, beta, moving mean, moving variance, span kernel, span bias.
        self.reduce = keras.layers.Conv2D(self.reduced_channels, name="reduce", **conv_args)
        self.bn = keras.layers.BatchNormalization(name="bn", dtype=self.dtype_policy)
        self.span = keras.layers.Conv2D(
            self.kernel_size * self.kernel_size * self.groups, name="span", **conv_args
        )
        gen_shape = (None, None, None, channels)
        self.reduce.build(gen_shape)
        self.bn.build((None, None, None, self.reduced_channels))
        # Keras keeps the batch statistics' axes as a list, which its attribute tracking
        # wraps in a TrackedList that torch.compile cannot pass to torch.mean: the
        # compiled training step broke into 9 graphs at the batch norm (docs/PERF.md,
        # section 29). A tuple is left as it is.
        self.bn._reduction_axes = tuple(self.bn._reduction_axes)
        self.span.build((None, None, None, self.reduced_channels))

    def resolve_implementation(self, x, training=None) -> str:
        """The implementation a call uses: `implementation`, or the measured
        choice of `"auto"` for this backend, device and mode."""
        if self.implementation != "auto":
            return self.implementation
        mode = "training" if training else "inference"
        return auto.choose(backend.backend(), _device_kind(x), mode, backend.standardize_dtype(x.dtype))

    def call(self, inputs, training=None):
        x = inputs  # (B, H, W, C)
        impl = aggregation.get(self.resolve_implementation(x, training))
        if impl.generates and not training and not self.return_kernel:
            with stage(FUSED_STAGE):
                pooled = self._pool(x)  # (B, Ho, Wo, C)
                return impl.generating_function()(x, pooled, self._generation(), self.kernel_size,
                                                  self.strides, self.groups)
        if impl.trains_from_hidden and training and not self.return_kernel:
            with stage(STAGES[0]):
                hidden = self._hidden(x, training)  # (B, Ho, Wo, C/r)
            with stage(FUSED_STAGE):  # the span 1x1 on chip, inside the aggregation
                return impl.hidden_function()(x, hidden, self.span.kernel[0, 0], self.span.bias.value,
                                              self.kernel_size, self.strides, self.groups)
        with stage(STAGES[0]):
            hidden = self._hidden(x, training)  # (B, Ho, Wo, C/r)
            kernel = _pointwise(self.span, hidden)  # (B, Ho, Wo, G*K*K)
        with stage(STAGES[1]):
            out = impl.function()(x, kernel, self.kernel_size, self.strides, self.groups)
        if not self.return_kernel:
            return out
        shape = ops.shape(kernel)
        k = self.kernel_size
        return out, ops.reshape(kernel, (-1, shape[1], shape[2], self.groups, k, k))

    def _pool(self, x):
        """x average-pooled by the stride, "same" padding, padded cells not
        counted, alike on every backend (layers.pooling): (B, Ho, Wo, C)."""
        return average_pool_same(x, self.strides) if self.strides > 1 else x

    def _hidden(self, x, training):
        """The generation's bottleneck relu(bn(reduce(pool(x)))): (B, Ho, Wo, C/r)."""
        pooled = self._pool(x)  # (B, Ho, Wo, C)
        return ops.relu(self.bn(_pointwise(self.reduce, pooled), training=training))

    def _generation(self):
        """The generation branch's weights for an implementation that
        generates inside its kernel (see layers.aggregation.Implementation)."""
        return Generation(
            reduce_kernel=self.reduce.kernel[0, 0], reduce_bias=self.reduce.bias.value,  # (C, R), (R,)
            gamma=self.bn.gamma.value, beta=self.bn.beta.value, moving_mean=self.bn.moving_mean.value,
            moving_variance=self.bn.moving_variance.value, epsilon=self.bn.epsilon,
            span_kernel=self.span.kernel[0, 0], span_bias=self.span.bias.value,  # (R, G*K*K), (G*K*K,)
        )

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        ho = None if h is None else -(-h // self.strides)
        wo = None if w is None else -(-w // self.strides)
        out = (b, ho, wo, c)
        if self.return_kernel:
            return out, (b, ho, wo, self.groups, self.kernel_size, self.kernel_size)
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "groups": self.groups,
                "reduction_ratio": self.reduction_ratio,
                "implementation": self.implementation,
                "return_kernel": self.return_kernel,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "data_format": self.data_format,
            }
        )
        return config


def _pointwise(conv: keras.layers.Conv2D, x):
    """A 1x1 Conv2D of the generation branch, with the layer's own weights.

    On PyTorch with CUDA it is a matmul over the channel axis: the same
    function without the channels-first transposes of PyTorch's convolution
    (two extra passes over the generated kernel) and without a sub-layer call
    per step. Elsewhere it is the Conv2D itself: XLA and TensorFlow run it
    channels-last, and on an H100 the matmul made JAX's float32 layer slower
    (docs/PERF.md, section 5); on CPUs PyTorch 2.13's matmul with 4 output
    columns (C // reduction_ratio = 4) took milliseconds for a 64x16 input.
    """
    if backend.backend() == "torch" and x.is_cuda:
        return ops.matmul(x, conv.kernel[0, 0]) + conv.bias  # (..., C_in) @ (C_in, C_out)
    return conv(x)
