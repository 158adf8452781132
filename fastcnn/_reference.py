"""PyTorch reference paths: what each op computes when no Triton kernel can run.

They follow the kernels' math step for step (fp32 arithmetic, same formulas), so a model gives
the same results with or without Triton; they are also the readable statement of that math.
"""
import torch


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, lr, beta1, beta2, eps,
              weight_decay, decoupled_weight_decay, amsgrad, maximize, grad_scale=None, found_inf=None):
    """In-place Adam/AdamW step over lists of tensors; see kernels/adam.py for the formulas."""
    keep = None if found_inf is None else (found_inf == 0)
    for index, param in enumerate(params):
        step = steps[index]
        step.add_(1.0 if keep is None else keep.to(step.dtype))
        if param.numel() == 0:
            continue
        step_value = step.to(torch.float64)
        bias_correction1 = 1.0 - torch.pow(torch.tensor(beta1, dtype=torch.float64, device=step.device), step_value)
        bias_correction2 = 1.0 - torch.pow(torch.tensor(beta2, dtype=torch.float64, device=step.device), step_value)
        step_size = (lr / bias_correction1).float()
        inv_bias_correction2_sqrt = bias_correction2.rsqrt().float()

        p = param.float()
        grad = grads[index].float()
        exp_avg = exp_avgs[index].float()
        exp_avg_sq = exp_avg_sqs[index].float()
        if grad_scale is not None:
            grad = grad * (1.0 / grad_scale.float())
        if maximize:
            grad = -grad
        if weight_decay != 0:
            if decoupled_weight_decay:
                p = p * (1.0 - lr * weight_decay)
            else:
                grad = grad + weight_decay * p
        exp_avg = exp_avg + (1.0 - beta1) * (grad - exp_avg)
        exp_avg_sq = beta2 * exp_avg_sq + (1.0 - beta2) * grad * grad
        second_moment = exp_avg_sq
        if amsgrad:
            second_moment = torch.maximum(max_exp_avg_sqs[index].float(), exp_avg_sq)
            _write(max_exp_avg_sqs[index], second_moment, keep)
        denom = second_moment.sqrt() * inv_bias_correction2_sqrt + eps
        p = p - step_size * (exp_avg / denom)
        _write(param, p, keep)
        _write(exp_avgs[index], exp_avg, keep)
        _write(exp_avg_sqs[index], exp_avg_sq, keep)


def _write(destination, value, keep):
    """destination[:] = value, or leave it when ``keep`` (a device bool) is False: no host sync."""
    if keep is not None:
        value = torch.where(keep, value, destination.float())
    destination.copy_(value)
