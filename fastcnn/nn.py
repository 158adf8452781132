"""Drop-in ``torch.nn`` modules running fastcnn's kernels. Each subclasses the torch module it
replaces, so constructors, ``repr``, ``state_dict`` keys and ``isinstance`` checks are unchanged."""
import torch

from .dtypes import KERNEL_DTYPES
from .ops import activation as _activation
from .ops.avg_pool import adaptive_avg_pool2d, avg_pool2d
from .ops.batch_norm import batch_norm, batch_norm_add_batch_norm
from .ops.conv2d import batch_norm_conv2d, conv2d, conv2d_with_moments
from .ops.cross_entropy import cross_entropy
from .ops.dropout import dropout, dropout2d, stochastic_depth
from .ops.group_norm import group_norm, instance_norm
from .ops.layer_norm import layer_norm, layer_norm2d
from .ops.linear import linear
from .ops.max_pool import batch_norm_max_pool2d, max_pool2d
from .ops.nll_loss import nll_loss
from .ops import pointwise_loss as _pointwise_loss
from .ops.prelu import prelu
from .ops.softmax import log_softmax, softmax
from .ops.squeeze_excitation import squeeze_excitation_gate
from .ops.sync_batch_norm import process_group_size, synchronised_batch_norm


class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` on fastcnn's conv2d kernels. Non-zero ``padding_mode`` values
    ('reflect', 'replicate', 'circular') pad with ``F.pad`` first, exactly as torch does, and
    then run the kernel without padding."""

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            padded = torch.nn.functional.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv2d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
        return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` on fastcnn's fused cross-entropy kernel."""

    def forward(self, input, target):
        return cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, label_smoothing=self.label_smoothing)


class MSELoss(torch.nn.MSELoss):
    """``torch.nn.MSELoss`` on fastcnn's pointwise-loss kernels."""

    def forward(self, input, target):
        return _pointwise_loss.mse_loss(input, target, reduction=self.reduction)


class L1Loss(torch.nn.L1Loss):
    """``torch.nn.L1Loss`` on fastcnn's pointwise-loss kernels."""

    def forward(self, input, target):
        return _pointwise_loss.l1_loss(input, target, reduction=self.reduction)


class SmoothL1Loss(torch.nn.SmoothL1Loss):
    """``torch.nn.SmoothL1Loss`` on fastcnn's pointwise-loss kernels."""

    def forward(self, input, target):
        return _pointwise_loss.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(torch.nn.HuberLoss):
    """``torch.nn.HuberLoss`` on fastcnn's pointwise-loss kernels."""

    def forward(self, input, target):
        return _pointwise_loss.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class BCELoss(torch.nn.BCELoss):
    """``torch.nn.BCELoss`` on fastcnn's pointwise-loss kernels."""

    def forward(self, input, target):
        return _pointwise_loss.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(torch.nn.BCEWithLogitsLoss):
    """``torch.nn.BCEWithLogitsLoss`` on fastcnn's pointwise-loss kernels."""

    def forward(self, input, target):
        return _pointwise_loss.binary_cross_entropy_with_logits(input, target, self.weight, pos_weight=self.pos_weight,
                                                                reduction=self.reduction)


class KLDivLoss(torch.nn.KLDivLoss):
    """``torch.nn.KLDivLoss`` on fastcnn's pointwise-loss kernels."""

    def forward(self, input, target):
        return _pointwise_loss.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class NLLLoss(torch.nn.NLLLoss):
    """``torch.nn.NLLLoss`` on fastcnn's nll_loss kernels."""

    def forward(self, input, target):
        return nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


class Softmax(torch.nn.Softmax):
    """``torch.nn.Softmax`` on fastcnn's softmax kernels."""

    def forward(self, input):
        return softmax(input, self.dim, _stacklevel=5)


class LogSoftmax(torch.nn.LogSoftmax):
    """``torch.nn.LogSoftmax`` on fastcnn's softmax kernels."""

    def forward(self, input):
        return log_softmax(input, self.dim, _stacklevel=5)


class MaxPool2d(torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` on fastcnn's max-pool kernels."""

    def forward(self, input):
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation, ceil_mode=self.ceil_mode,
                          return_indices=self.return_indices)


class AvgPool2d(torch.nn.AvgPool2d):
    """``torch.nn.AvgPool2d`` on fastcnn's average-pool kernels (every argument)."""

    def forward(self, input):
        return avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                          self.divisor_override)


class AdaptiveAvgPool2d(torch.nn.AdaptiveAvgPool2d):
    """``torch.nn.AdaptiveAvgPool2d`` on fastcnn's average-pool kernels (the 1x1 head as one
    reduction)."""

    def forward(self, input):
        return adaptive_avg_pool2d(input, self.output_size)


class _FusedActivation:
    """The ``activation=`` of a norm or linear module: stored resolved, as the kernel's (kind,
    parameter) or None, so that it adds no submodule and no state (state_dict keys stay torch's).
    ``convert`` sets it on a module whose class it swapped, to fuse the activation that followed.
    An ``nn.PReLU`` has learnable slopes: it stays a submodule, ``prelu`` (its "prelu.weight" is
    this module's to train and save), whose slopes the kernels read; ``activation`` then reads
    ("prelu", 0.0). ``convert`` fuses a model's PReLU without moving it (``borrow_prelu``): the
    PReLU stays where it was, under its own state_dict keys, and this module reads its slopes."""

    activation = None

    def _set_activation(self, activation):
        if isinstance(activation, torch.nn.PReLU):
            self.prelu = activation
            self.activation = ("prelu", 0.0)
            return
        kind, parameter = _activation.resolve_activation(f"fastcnn.nn.{type(self).__name__}", activation)
        self.activation = None if kind is None else (kind, parameter)

    def borrow_prelu(self, prelu):
        """Apply ``prelu``'s slopes as this module's activation without registering it here (a
        plain attribute, not a submodule: it stays its owner's, with its state_dict keys)."""
        self.__dict__["_borrowed_prelu"] = prelu
        self.activation = ("prelu", 0.0)

    @property
    def fused_activation(self):
        """What the functionals' ``activation=`` takes: the PReLU module, else (kind, parameter) or None."""
        if "prelu" in self._modules:
            return self._modules["prelu"]
        if self.fuses_slopes:
            return self.__dict__["_borrowed_prelu"]
        return self.activation

    @property
    def fuses_slopes(self):
        """Whether the activation is a PReLU, whose learnable slopes only this module's kernels read."""
        return self.activation is not None and self.activation[0] == "prelu"

    def extra_repr(self):
        fused = "" if self.activation is None else f", activation={self.activation[0]!r}"
        return super().extra_repr() + fused


class BatchNorm2d(_FusedActivation, torch.nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d`` on fastcnn's batch-norm kernels (same constructor, buffers,
    state_dict keys, momentum=None cumulative averaging, affine / track_running_stats options),
    optionally followed by a fused ``activation``. ``forward(input, residual=None)``: with a
    ``residual`` it computes act(bn(input) + residual) in the same pass (the end of a ResNet
    block; ``convert`` passes the block's identity here)."""

    def __init__(self, *args, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._set_activation(activation)

    def _batch_norm_arguments(self, input):
        """(running statistics or Nones, whether to use the batch's, averaging factor) for one
        call on ``input``: torch's _BatchNorm.forward, step for step (it counts the batch)."""
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        batch_statistics = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return (self.running_mean if track else None, self.running_var if track else None), batch_statistics, factor

    def forward(self, input, residual=None, moments=None, residual_norm=None, residual_moments=None):
        """act(bn(input) [+ residual]); ``moments``: those the convolution that computed ``input``
        emitted for it (``conv2d_for_batch_norm``), which spare the statistics pass in training.
        ``residual_norm``: a fastcnn ``BatchNorm2d`` (no activation) whose output the residual is,
        ``residual`` then being its input (and ``residual_moments`` that input's moments):
        act(bn(input) + residual_norm(residual)) in one pass (``fastcnn.batch_norm_add_batch_norm``;
        what ``convert`` puts where a ResNet block adds its downsample's batch norm)."""
        statistics, batch_statistics, factor = self._batch_norm_arguments(input)
        if isinstance(residual_norm, SyncBatchNorm):  # its statistics are all-reduced: its own pass
            residual, residual_norm = residual_norm(residual, moments=residual_moments), None
        if residual_norm is not None:
            residual_statistics, residual_batch, residual_factor = residual_norm._batch_norm_arguments(residual)
            if residual_batch == batch_statistics and residual_norm.activation is None:
                return batch_norm_add_batch_norm(
                    input, *statistics, self.weight, self.bias, residual, *residual_statistics, residual_norm.weight,
                    residual_norm.bias, batch_statistics, factor, self.eps, residual_factor, residual_norm.eps,
                    activation=self.fused_activation, moments=moments, residual_moments=residual_moments)
            # one norm in training and one in eval (or an activation): the residual's batch norm alone first
            residual = batch_norm(residual, *residual_statistics, residual_norm.weight, residual_norm.bias,
                                  residual_batch, residual_factor, residual_norm.eps,
                                  activation=residual_norm.fused_activation, moments=residual_moments)
        return _with_residual(self, input, residual, lambda activation, residual: batch_norm(
            input, *statistics, self.weight, self.bias, batch_statistics, factor, self.eps, activation=activation,
            residual=residual, moments=moments))

    def uses_batch_statistics(self):
        """Whether the next call normalises with the batch's statistics (training, or no running
        statistics), which the moments of a convolution's epilogue can give."""
        return self.training or (self.running_mean is None and self.running_var is None)


def _with_residual(norm, input, residual, normalise):
    """act(norm(input) + residual) for a fastcnn batch norm module ``norm``, its fused activation
    ``act``: ``normalise(activation, residual)``, the norm's functional on ``input``, with both
    fused; where the sum would broadcast the output up or promote its dtype (or raise), what
    convert's call bn(x, residual) stands for, as the original ran it."""
    if residual is None or _fits_output(input, residual):
        return normalise(norm.fused_activation, residual)
    out = normalise(None, None) + residual
    kind, parameter, slope = _activation.resolve_fused_activation(f"fastcnn.nn.{type(norm).__name__}",
                                                                  norm.fused_activation)
    return _activation.apply_activation(out, kind, parameter, slope, fallback=out.dtype not in KERNEL_DTYPES)


def batch_norm_into_conv2d(input, norm, conv, moments=None, then=None):
    """``conv(norm(input))`` for a fastcnn ``BatchNorm2d`` ``norm`` (with its fused activation, if
    any) and a ``Conv2d`` ``conv`` as one ``fastcnn.batch_norm_conv2d`` call: the batch norm in the
    convolution's prologue, with both modules' parameters and ``norm``'s buffers, training or
    eval as ``norm`` is. What ``fastcnn.convert`` puts where a traced forward runs a batch norm
    (and its activation) whose output only feeds a convolution. ``moments``: the input's, from the
    convolution that computed it; ``then``: the batch norm the output goes to, for which this
    returns (output, its moments or None) as ``conv2d_for_batch_norm`` does."""
    # The padding would be of act(bn(x)) as torch pads it, a PReLU's slopes would need their
    # gradient summed in the convolution's backward, a SyncBatchNorm's gradient sums all-reduced
    # between the convolution's two backward passes: unfused.
    if conv.padding_mode != "zeros" or norm.fuses_slopes or isinstance(norm, SyncBatchNorm):
        normalised = norm(input, moments=moments)
        return conv(normalised) if then is None else conv2d_for_batch_norm(normalised, conv, then)
    statistics, batch_statistics, factor = norm._batch_norm_arguments(input)
    emit = then is not None and then.uses_batch_statistics()
    out = batch_norm_conv2d(input, *statistics, norm.weight, norm.bias, batch_statistics, factor, norm.eps,
                            conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups,
                            activation=norm.activation, moments=moments, emit_moments=emit)
    return out if then is None or emit else (out, None)


def batch_norm_into_max_pool2d(input, norm, pool, moments=None):
    """``pool(norm(input))`` for a fastcnn ``BatchNorm2d`` ``norm`` (with its fused activation, if
    any) and a ``MaxPool2d`` ``pool`` as one ``fastcnn.batch_norm_max_pool2d`` call: the batch
    norm in the pool's prologue, training or eval as ``norm`` is. What ``fastcnn.convert`` puts
    where a traced forward runs a batch norm (and its activation) whose output only feeds a
    max-pool, as a ResNet's stem does. ``moments``: the input's, from the convolution that
    computed it."""
    # What the fused op does not return or take (a PReLU's learnable slopes, statistics across
    # processes): unfused.
    if pool.return_indices or input.dim() != 4 or norm.fuses_slopes or isinstance(norm, SyncBatchNorm):
        return pool(norm(input, moments=moments))
    statistics, batch_statistics, factor = norm._batch_norm_arguments(input)
    return batch_norm_max_pool2d(input, *statistics, norm.weight, norm.bias, batch_statistics, factor, norm.eps,
                                 kernel_size=pool.kernel_size, stride=pool.stride, padding=pool.padding,
                                 dilation=pool.dilation, ceil_mode=pool.ceil_mode, activation=norm.activation,
                                 moments=moments)


def conv2d_for_batch_norm(input, conv, norm):
    """(``conv(input)``, the moments of its output for the fastcnn ``BatchNorm2d`` ``norm`` that
    reads it next, or None when ``norm`` will not use batch statistics): the convolution's
    moments epilogue (``fastcnn.conv2d_with_moments``) spares ``norm`` its statistics pass. What
    ``fastcnn.convert`` puts where a traced forward's convolution feeds only a batch norm."""
    if conv.padding_mode != "zeros" or not norm.uses_batch_statistics():
        return conv(input), None
    return conv2d_with_moments(input, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _fits_output(input, residual):
    """Whether ``residual`` can be added into batch norm's output of ``input`` in the kernel: a
    tensor of the input's dtype that broadcasts to the input's shape."""
    if not isinstance(residual, torch.Tensor) or residual.dtype != input.dtype:
        return False
    try:
        return torch.broadcast_shapes(input.shape, residual.shape) == input.shape
    except RuntimeError:
        return False


class BatchNorm2dAct(BatchNorm2d):
    """``act(BatchNorm2d(x) [+ residual])`` fused in one kernel forward and backward, ``activation``
    any of fastcnn's kinds ("relu", "relu6", ("leaky_relu", 0.1), nn.SiLU(), ...); a
    ``torch.nn.BatchNorm2d`` subclass with its state_dict keys, so BN checkpoints load unchanged."""

    def __init__(self, *args, activation="relu", **kwargs):
        super().__init__(*args, activation=activation, **kwargs)


class BatchNorm2dReLU(BatchNorm2dAct):
    """``relu(BatchNorm2d(x) [+ residual])``: ``BatchNorm2dAct`` with activation="relu"."""

    activation = ("relu", 0.0)


class SyncBatchNorm(_FusedActivation, torch.nn.SyncBatchNorm):
    """``torch.nn.SyncBatchNorm`` on fastcnn's kernels (same constructor with ``process_group``,
    buffers, state_dict keys), optionally followed by a fused ``activation`` and, in
    ``forward(input, residual)``, a residual added before it, as ``BatchNorm2d``: in training
    under torch.distributed the statistics are those of every process's batch
    (``fastcnn.sync_batch_norm``: one all-gather forward, one all-reduce backward; uneven and
    empty batches), on CUDA tensors and on CPU tensors (gloo), which torch's refuses. Otherwise
    batch norm as ``BatchNorm2d`` computes it. ``convert`` gives a model's ``nn.SyncBatchNorm``
    this class; ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` (and this class's) turns
    fastcnn's batch norms into it, their fused activations kept."""

    def __init__(self, *args, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._set_activation(activation)

    _batch_norm_arguments = BatchNorm2d._batch_norm_arguments
    uses_batch_statistics = BatchNorm2d.uses_batch_statistics

    def forward(self, input, residual=None, moments=None, residual_norm=None, residual_moments=None):
        """act(sync_bn(input) [+ residual]), as torch's SyncBatchNorm.forward decides whether to
        synchronise; ``moments``, ``residual_norm``, ``residual_moments`` as ``BatchNorm2d.forward``
        takes them (the residual's norm runs on its own first)."""
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        statistics, batch_statistics, factor = self._batch_norm_arguments(input)
        if residual_norm is not None:
            residual = residual_norm(residual, moments=residual_moments)
        group, world_size = process_group_size(self.process_group) if self.training else (None, 1)
        if world_size > 1:
            def normalise(activation, residual):
                return synchronised_batch_norm(f"fastcnn.nn.{type(self).__name__}", input, *statistics, self.weight,
                                               self.bias, factor, self.eps, group, world_size, activation, residual,
                                               moments)
        else:
            def normalise(activation, residual):
                return batch_norm(input, *statistics, self.weight, self.bias, batch_statistics, factor, self.eps,
                                  activation=activation, residual=residual, moments=moments)
        return _with_residual(self, input, residual, normalise)


FASTCNN_BATCH_NORMS = (BatchNorm2d, SyncBatchNorm)


def _sync_batch_norm_from(module, process_group, cls):
    """A ``cls`` (torch's SyncBatchNorm or fastcnn's) holding ``module``'s parameters and buffers
    (the same tensors, as torch's convert_sync_batchnorm does), mode and qconfig, and, for
    fastcnn's class, the activation a fastcnn norm fused (a PReLU it borrowed stays borrowed)."""
    sync = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
               process_group)
    if module.affine:
        with torch.no_grad():
            sync.weight, sync.bias = module.weight, module.bias
    sync.running_mean, sync.running_var = module.running_mean, module.running_var
    sync.num_batches_tracked = module.num_batches_tracked
    sync.training = module.training
    if hasattr(module, "qconfig"):
        sync.qconfig = module.qconfig
    if cls is SyncBatchNorm and isinstance(module, _FusedActivation):
        sync.activation = module.activation
        if "_borrowed_prelu" in module.__dict__:
            sync.__dict__["_borrowed_prelu"] = module.__dict__["_borrowed_prelu"]
    return sync


# torch's own converter (kept on ours, so that a reload of this module does not wrap ours in ours)
_torch_convert_sync_batchnorm = getattr(torch.nn.SyncBatchNorm.convert_sync_batchnorm.__func__, "torch_original",
                                        torch.nn.SyncBatchNorm.convert_sync_batchnorm.__func__)


def _convert_sync_batchnorm(cls, module, process_group=None):
    """``torch.nn.SyncBatchNorm.convert_sync_batchnorm``, as importing fastcnn sets it: torch's
    own for a model without fastcnn's batch norms; otherwise every batch norm layer becomes a
    SyncBatchNorm as in torch's, fastcnn's (and, called on fastcnn's class, torch's too) becoming
    ``fastcnn.nn.SyncBatchNorm`` with the activation it fused: torch's class would drop that
    activation and refuse the residual a converted model's forward passes."""
    if cls is torch.nn.SyncBatchNorm and not any(isinstance(m, FASTCNN_BATCH_NORMS) for m in module.modules()):
        return _torch_convert_sync_batchnorm(cls, module, process_group)
    output = module
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        ours = cls is not torch.nn.SyncBatchNorm or isinstance(module, FASTCNN_BATCH_NORMS)
        output = _sync_batch_norm_from(module, process_group, SyncBatchNorm if ours else torch.nn.SyncBatchNorm)
    for name, child in module.named_children():
        output.add_module(name, _convert_sync_batchnorm(cls, child, process_group))
    return output


_convert_sync_batchnorm.torch_original = _torch_convert_sync_batchnorm
torch.nn.SyncBatchNorm.convert_sync_batchnorm = classmethod(_convert_sync_batchnorm)


def _allow_cpu_sync_batch_norm(ddp_class):
    """DistributedDataParallel refuses a CPU module with SyncBatchNorm layers because torch's
    cannot run on CPU tensors; fastcnn's can (gloo), so the check is made of torch's layers only."""
    torch_check = getattr(ddp_class, "_passing_sync_batchnorm_handle", None)
    if torch_check is None or getattr(torch_check, "fastcnn", False):
        return

    def check(self, module):
        if any(isinstance(layer, torch.nn.SyncBatchNorm) and not isinstance(layer, SyncBatchNorm)
               for layer in module.modules()):
            torch_check(self, module)

    check.fastcnn = True
    ddp_class._passing_sync_batchnorm_handle = check


_allow_cpu_sync_batch_norm(torch.nn.parallel.DistributedDataParallel)


class Linear(_FusedActivation, torch.nn.Linear):
    """``torch.nn.Linear`` on fastcnn's GEMM kernels (same constructor, parameters and state_dict
    keys), optionally followed by a fused ``activation`` computed in the GEMM's epilogue
    (``convert`` sets it for Linear → GELU in ConvNeXt's MLPs and the classifier heads' activations)."""

    def __init__(self, *args, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._set_activation(activation)  # an nn.PReLU's slopes are read in the GEMM's epilogue

    def forward(self, input, output_scale=None):
        """act(linear(input)), times ``output_scale`` per output feature when given (ConvNeXt's
        layer scale, which ``convert`` passes here): all in the GEMM's epilogue."""
        return linear(input, self.weight, self.bias, activation=self.fused_activation, output_scale=output_scale)


class GroupNorm(_FusedActivation, torch.nn.GroupNorm):
    """``torch.nn.GroupNorm`` on fastcnn's group-norm kernels, optionally followed by a fused
    ``activation`` ("silu", nn.GELU(), ... see ``fastcnn.ops.activation.resolve_activation``)."""

    def __init__(self, *args, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._set_activation(activation)

    def forward(self, input):
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps, activation=self.fused_activation)


class LayerNorm(_FusedActivation, torch.nn.LayerNorm):
    """``torch.nn.LayerNorm`` on fastcnn's layer-norm kernel (any strides: a permuted NHWC view is
    read as it lies), optionally followed by a fused ``activation``."""

    def __init__(self, *args, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._set_activation(activation)

    def forward(self, input):
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps,
                          activation=self.fused_activation)


class LayerNorm2d(LayerNorm):
    """torchvision's ConvNeXt ``LayerNorm2d`` (a ``torch.nn.LayerNorm`` over the channels of an
    (N, C, H, W) input) in one kernel, without its two permutes; same state_dict."""

    def forward(self, input):
        return layer_norm2d(input, self.weight, self.bias, self.eps, activation=self.fused_activation)


class _InstanceNorm(_FusedActivation):
    def __init__(self, *args, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._set_activation(activation)

    def _apply_instance_norm(self, input):
        # torch's _InstanceNorm._apply_instance_norm, on fastcnn's kernels.
        return instance_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                             self.training or not self.track_running_stats,
                             self.momentum if self.momentum is not None else 0.0, self.eps,
                             activation=self.fused_activation)


class InstanceNorm1d(_InstanceNorm, torch.nn.InstanceNorm1d):
    """``torch.nn.InstanceNorm1d`` on fastcnn's group-norm kernels (one channel per group)."""


class InstanceNorm2d(_InstanceNorm, torch.nn.InstanceNorm2d):
    """``torch.nn.InstanceNorm2d`` on fastcnn's group-norm kernels (one channel per group)."""


class InstanceNorm3d(_InstanceNorm, torch.nn.InstanceNorm3d):
    """``torch.nn.InstanceNorm3d`` on fastcnn's group-norm kernels (one channel per group)."""


class Dropout(torch.nn.Dropout):
    """``torch.nn.Dropout`` on fastcnn's Philox dropout kernel (the mask regenerated in backward)."""

    def forward(self, input):
        return dropout(input, self.p, self.training, self.inplace)


class Dropout2d(torch.nn.Dropout2d):
    """``torch.nn.Dropout2d`` on fastcnn's channel-wise dropout kernel."""

    def forward(self, input):
        return dropout2d(input, self.p, self.training, self.inplace)


class StochasticDepth(torch.nn.Module):
    """torchvision's ``StochasticDepth(p, mode)`` (the residual branch of a whole sample, "row", or
    of the whole batch, "batch", dropped with probability ``p``) on fastcnn's dropout kernel;
    ``convert`` gives torchvision's module this class (torchvision is not imported)."""

    def __init__(self, p, mode):
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, input):
        return stochastic_depth(input, self.p, self.mode, self.training)

    def __repr__(self):
        return f"{self.__class__.__name__}(p={self.p}, mode={self.mode})"


class FusedPReLU(torch.nn.PReLU):
    """What ``convert`` leaves in a Sequential's slot of an ``nn.PReLU`` it fused into the norm or
    Linear before it: the same module (its ``weight``, the slopes, under its state_dict key, trained
    through that module's kernel, which reads them), passing its input through."""

    def forward(self, input):
        return input

    def extra_repr(self):
        return super().extra_repr() + ", applied by the module before it"


class PReLU(torch.nn.PReLU):
    """``torch.nn.PReLU`` (one slope, or ``num_parameters`` = the channels) on fastcnn's kernels;
    the slope's gradient is summed deterministically."""

    def forward(self, input):
        return prelu(input, self.weight)


class SqueezeExcitation(torch.nn.Module):
    """torchvision's ``SqueezeExcitation(input_channels, squeeze_channels, activation=nn.ReLU,
    scale_activation=nn.Sigmoid)`` (EfficientNet's, MobileNetV3's, RegNetY's): global average
    pool, 1x1 conv, activation, 1x1 conv, then the gate ``scale_activation(scale) * input`` as
    one ``fastcnn.squeeze_excitation_gate`` call (the scale's activation fused, the multiply's
    backward one pass). Same submodules and state_dict; ``convert`` gives torchvision's module
    this class (torchvision is not imported), whose children become fastcnn's modules too."""

    def __init__(self, input_channels, squeeze_channels, activation=torch.nn.ReLU,
                 scale_activation=torch.nn.Sigmoid):
        super().__init__()
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc1 = torch.nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = torch.nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, input):
        scale = self.fc2(self.activation(self.fc1(self.avgpool(input))))
        return squeeze_excitation_gate(input, scale, activation=self.scale_activation)


def _activation_module(torch_module, kind, call, doc):
    """A subclass of the torch activation module ``torch_module`` whose forward is ``call(self, input)``."""
    return type(torch_module.__name__, (torch_module,), {"forward": lambda self, input: call(self, input),
                                                         "__doc__": doc, "__module__": __name__,
                                                         "fastcnn_kind": kind})


ReLU = _activation_module(torch.nn.ReLU, "relu", lambda m, x: _activation.relu(x, m.inplace),
                          "``torch.nn.ReLU`` on fastcnn's activation kernel.")
ReLU6 = _activation_module(torch.nn.ReLU6, "relu6", lambda m, x: _activation.relu6(x, m.inplace),
                           "``torch.nn.ReLU6`` on fastcnn's activation kernel.")
LeakyReLU = _activation_module(torch.nn.LeakyReLU, "leaky_relu",
                               lambda m, x: _activation.leaky_relu(x, m.negative_slope, m.inplace),
                               "``torch.nn.LeakyReLU`` on fastcnn's activation kernel.")
ELU = _activation_module(torch.nn.ELU, "elu", lambda m, x: _activation.elu(x, m.alpha, m.inplace),
                         "``torch.nn.ELU`` on fastcnn's activation kernel.")
SiLU = _activation_module(torch.nn.SiLU, "silu", lambda m, x: _activation.silu(x, m.inplace),
                          "``torch.nn.SiLU`` on fastcnn's activation kernel.")
GELU = _activation_module(torch.nn.GELU, "gelu", lambda m, x: _activation.gelu(x, m.approximate),
                          "``torch.nn.GELU`` (exact or tanh) on fastcnn's activation kernel.")
Hardswish = _activation_module(torch.nn.Hardswish, "hardswish", lambda m, x: _activation.hardswish(x, m.inplace),
                               "``torch.nn.Hardswish`` on fastcnn's activation kernel.")
Hardsigmoid = _activation_module(torch.nn.Hardsigmoid, "hardsigmoid",
                                 lambda m, x: _activation.hardsigmoid(x, m.inplace),
                                 "``torch.nn.Hardsigmoid`` on fastcnn's activation kernel.")
Sigmoid = _activation_module(torch.nn.Sigmoid, "sigmoid", lambda m, x: _activation.sigmoid(x),
                             "``torch.nn.Sigmoid`` on fastcnn's activation kernel.")
Tanh = _activation_module(torch.nn.Tanh, "tanh", lambda m, x: _activation.tanh(x),
                          "``torch.nn.Tanh`` on fastcnn's activation kernel.")
ACTIVATIONS = (ReLU, ReLU6, LeakyReLU, ELU, SiLU, GELU, Hardswish, Hardsigmoid, Sigmoid, Tanh)
