"""Drop-in ``torch.nn`` modules running fastcnn's kernels. Each subclasses the torch module it
replaces, so constructors, ``repr``, ``state_dict`` keys and ``isinstance`` checks are unchanged."""
import torch

from .ops.batch_norm import batch_norm, batch_norm_relu
from .ops.conv2d import conv2d
from .ops.cross_entropy import cross_entropy
from .ops.max_pool import max_pool2d


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


class MaxPool2d(torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` on fastcnn's max-pool kernels."""

    def forward(self, input):
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation, ceil_mode=self.ceil_mode,
                          return_indices=self.return_indices)


class BatchNorm2d(torch.nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d`` on fastcnn's batch-norm kernels (same constructor, buffers,
    state_dict keys, momentum=None cumulative averaging, affine / track_running_stats options)."""

    fused_relu = False

    def forward(self, input):
        self._check_input_dim(input)
        # torch's _BatchNorm.forward, step for step: count the batch, pick the averaging factor.
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        batch_statistics = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        function = batch_norm_relu if self.fused_relu else batch_norm
        return function(input, self.running_mean if track else None, self.running_var if track else None,
                        self.weight, self.bias, batch_statistics, factor, self.eps)


class BatchNorm2dReLU(BatchNorm2d):
    """``relu(BatchNorm2d(x))`` fused in one kernel forward and backward; a ``torch.nn.BatchNorm2d``
    subclass with its state_dict keys, so BN checkpoints load into it unchanged."""

    fused_relu = True
