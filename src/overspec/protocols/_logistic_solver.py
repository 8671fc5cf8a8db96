"""Full-batch solver for L2-penalised multinomial logistic regression on cached features (CPU or GPU).

Minimises ``mean_i CE_i + l2/2 sum(weight * V**2)`` over ``[V ; b]`` by L-BFGS (Nocedal & Wright 2006, algorithm
7.4 and 7.5) with a backtracking Armijo line search: the objective is strictly convex, so every step keeps the
curvature pairs positive and the unit step is accepted almost always, one function evaluation per iteration. It is
written out instead of using ``torch.optim.LBFGS`` because that optimizer's constructor imports ``torch._dynamo`` on
first use (about 2 s per process on CPU) and its strong-Wolfe search spends extra evaluations on warm starts.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: The probe's fitting scheme (solver, precisions, tolerances, C search) as named in the runner's unit key: what the
#: probe's numbers depend on besides its settings.
SOLVER = "lbfgs-mixed-tol1e-6-search-float32-tol1e-5-settled"

# Stop when the loss (about 1 for the mean-scaled objective) changes by less than this between iterations; in
# float64 this is scipy's ``ftol = 64 eps`` that scikit-learn passes, in float32 the logits' rounding dominates.
TOLERANCE_CHANGE = {torch.float64: 64 * float(np.finfo(np.float64).eps), torch.float32: 1e-9}
_ARMIJO = 1e-4
_MAX_BACKTRACKS = 20


def loss_and_gradient(
    params: torch.Tensor, x: torch.Tensor, y: torch.Tensor, l2: float, weight: torch.Tensor,
    x_t: torch.Tensor | None = None,
) -> tuple[float, torch.Tensor]:
    """Return ``mean CE + l2/2 sum(weight * V**2)`` and its gradient for ``params = [V ; b]`` of shape (D + 1, K).

    ``x_t`` is ``x.T`` laid out contiguously when given: the gradient's product with it is 1.3-1.5x faster on CPU.
    """
    n, d = x.shape
    x_t = x.T if x_t is None else x_t
    log_probs = torch.log_softmax(torch.addmm(params[d], x, params[:d]), dim=1)
    nll = -log_probs.gather(1, y[:, None]).sum(dtype=torch.float64) / n
    penalised = params[:d] * weight
    loss = float(nll) + 0.5 * l2 * float((penalised * params[:d]).sum(dtype=torch.float64))
    residual = log_probs.exp_()
    residual[torch.arange(n, device=x.device), y] -= 1.0
    grad = torch.empty_like(params)
    torch.addmm(penalised, x_t, residual, beta=l2, alpha=1.0 / n, out=grad[:d])
    torch.sum(residual, dim=0, out=grad[d]).div_(n)
    return loss, grad


@dataclass
class Solution:
    """Weights ``[W.T ; b]`` (D + 1, K) of the symmetric multinomial model and solver counters."""

    params: torch.Tensor
    n_iter: int
    n_evals: int
    hit_limit: bool


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """Return the Frobenius inner product of two same-shaped tensors, accumulated in float64."""
    return float((a * b).sum(dtype=torch.float64))


def _two_loop_direction(
    grad: torch.Tensor, pairs: deque[tuple[torch.Tensor, torch.Tensor, float]], initial_scale: float
) -> torch.Tensor:
    """Return ``-H grad`` for the L-BFGS inverse-Hessian estimate ``H`` built from ``(s, y, 1 / y.s)`` pairs."""
    q = grad.neg()
    alphas = []
    for s, y, rho in reversed(pairs):
        alpha = rho * _dot(s, q)
        q.add_(y, alpha=-alpha)
        alphas.append(alpha)
    if pairs:
        s, y, _ = pairs[-1]
        q.mul_(_dot(s, y) / _dot(y, y))
    else:
        q.mul_(initial_scale)
    for (s, y, rho), alpha in zip(pairs, reversed(alphas)):
        beta = rho * _dot(y, q)
        q.add_(s, alpha=alpha - beta)
    return q


def solve_multinomial(
    x: torch.Tensor,
    y: torch.Tensor,
    params: torch.Tensor,
    l2: float,
    weight: torch.Tensor,
    tol: float,
    max_iter: int,
    history_size: int,
    initial_scale: float | None = None,
) -> Solution:
    """Minimise the penalised mean cross-entropy from ``params`` by L-BFGS; stop once ``max |grad| <= tol``.

    ``initial_scale`` is the first step's inverse-curvature guess (``None``: ``min(1, 1 / sum |grad|)``, as torch).
    Also stops when the loss or the step falls below the dtype's rounding level, or after ``2 max_iter`` evaluations.
    """
    params = params.detach().clone().contiguous()
    x_t = x.T.contiguous()
    tolerance_change = TOLERANCE_CHANGE[params.dtype]
    rounding = float(torch.finfo(params.dtype).eps)
    loss, grad = loss_and_gradient(params, x, y, l2, weight, x_t)
    n_evals, n_iter, pairs = 1, 0, deque(maxlen=history_size)
    if initial_scale is None:
        initial_scale = min(1.0, 1.0 / max(float(grad.abs().sum()), 1e-300))
    while float(grad.abs().max()) > tol and n_iter < max_iter and n_evals < 2 * max_iter:
        n_iter += 1
        direction = _two_loop_direction(grad, pairs, initial_scale)
        slope = _dot(grad, direction)
        if slope >= 0:  # rounding broke the estimate: restart from steepest descent
            pairs.clear()
            direction, slope = grad.mul(-initial_scale), -initial_scale * _dot(grad, grad)
        # near the optimum the loss differences sink below its rounding error; within it, steps are not judged
        step, accepted, noise = 1.0, False, rounding * abs(loss)
        for _ in range(_MAX_BACKTRACKS):
            trial = params.add(direction, alpha=step)
            new_loss, new_grad = loss_and_gradient(trial, x, y, l2, weight, x_t)
            n_evals += 1
            if new_loss <= loss + _ARMIJO * step * slope + noise:
                accepted = True
                break
            # minimiser of the quadratic through loss, slope and new_loss, kept within [0.1, 0.5] of the step
            shrink = -slope * step / (2 * (new_loss - loss - slope * step))
            step *= min(max(shrink, 0.1), 0.5)
        if not accepted:
            logger.debug("line search stalled at the rounding level after %d iterations", n_iter)
            break
        s, y_diff = trial - params, new_grad - grad
        curvature = _dot(s, y_diff)
        if curvature > 1e-10:
            pairs.append((s, y_diff, 1.0 / curvature))
        change = abs(new_loss - loss)
        params, loss, grad = trial, new_loss, new_grad
        if change < tolerance_change or float(s.abs().max()) <= tolerance_change:
            break
    return Solution(params, n_iter, n_evals, n_iter >= max_iter or n_evals >= 2 * max_iter)
