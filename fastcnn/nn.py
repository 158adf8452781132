"""Drop-in ``torch.nn`` modules running fastcnn's kernels. Each subclasses the torch module it
replaces, so constructors, ``repr``, ``state_dict`` keys and ``isinstance`` checks are unchanged."""
import torch

from .conv import conv2d
from .loss import cross_entropy
from .pool import max_pool2d


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
