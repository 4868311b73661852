"""The inverse-Lipschitz map that keeps the decoder from ignoring z.

After Kinoshita et al. (ICML 2023), built on Brenier maps:

    f(u) = B(g(u)),   g(u) = grad psi(u) + L * u,

with psi an input-convex neural network (ICNN) and B a linear lift with orthonormal
columns times a scale s >= 1. Because psi is convex, grad psi is monotone, so
<g(u) - g(v), u - v> >= L ||u - v||^2 and therefore ||g(u) - g(v)|| >= L ||u - v||
(Cauchy-Schwarz); B multiplies every length by s >= 1. Hence

    ||f(u) - f(v)|| >= s * L * ||u - v|| >= L * ||u - v||   for all u, v.

The gradient of psi is written out in closed form (the ICNN's own backward pass), not
taken with ``torch.autograd.grad``: it then runs under ``torch.no_grad()`` (evaluation,
generation), under autocast and ``torch.compile``, and training differentiates through
it like any other layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _inverse_softplus(x: float) -> float:
    return x + math.log(-math.expm1(-x))


def top_right_singular_vectors(weight: torch.Tensor, k: int) -> torch.Tensor:
    """(H, k): the k leading right-singular vectors of ``weight`` (V, H) centred over its rows,
    from the eigenvectors of the (H, H) Gram matrix in float64 (cheap for V >> H)."""
    if k > weight.shape[1]:
        raise ValueError(f"the output lift needs at most as many map outputs as the decoder is wide, "
                         f"got {k} > {weight.shape[1]} (lower invlip_state_size or latent_size)")
    w = weight.detach().double()
    w = w - w.mean(dim=0, keepdim=True)
    _, vectors = torch.linalg.eigh(w.T @ w)  # ascending eigenvalues
    return vectors[:, -k:].flip(-1).to(weight.dtype).contiguous()


def centred_min_singular_value(matrix: torch.Tensor) -> torch.Tensor:
    """sigma_min of ``matrix`` (V, k) centred over its rows: the least factor by which it
    stretches a vector, after the shift softmax ignores. Differentiable."""
    centred = matrix - matrix.mean(dim=0, keepdim=True)
    return torch.linalg.eigvalsh(centred.T @ centred)[0].clamp_min(0).sqrt()


def centred_whitening(matrix: torch.Tensor) -> torch.Tensor:
    """M (k, k) = (C^T C)^(-1/2) with C = ``matrix`` (V, k) centred over its rows: ``matrix @ M``
    has centred singular values all exactly 1 (an orthonormal basis of its centred span).
    Differentiable."""
    centred = matrix - matrix.mean(dim=0, keepdim=True)
    values, vectors = torch.linalg.eigh(centred.T @ centred)
    return vectors @ torch.diag(values.clamp_min(torch.finfo(values.dtype).tiny).rsqrt()) @ vectors.T


class ICNN(nn.Module):
    r"""A scalar input-convex network psi: R^n -> R.

    s_1 = W_1 u + b_1,   s_{k+1} = U_k softplus(s_k) + W_{k+1} u + b_{k+1},
    psi(u) = a^T softplus(s_K).

    psi is convex in u because softplus is convex and non-decreasing and the weights that
    act on hidden units (U_k and a) are kept non-negative by a softplus parametrisation.
    """

    def __init__(self, in_features: int, hidden_size: int, num_layers: int = 2):
        super().__init__()
        if num_layers < 1:
            raise ValueError("an ICNN needs at least one layer")
        # Weights on the input u are free; plain parameters (not nn.Linear) so that no
        # generic initialiser overrides the ICNN's own scaling.
        self.input_weights = nn.ParameterList(
            nn.Parameter(torch.empty(hidden_size, in_features)) for _ in range(num_layers)
        )
        self.input_biases = nn.ParameterList(nn.Parameter(torch.empty(hidden_size)) for _ in range(num_layers))
        # Raw parameters of the non-negative weights; softplus keeps them > 0.
        self.hidden_raw = nn.ParameterList(
            nn.Parameter(torch.empty(hidden_size, hidden_size)) for _ in range(num_layers - 1)
        )
        self.output_raw = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for weight, bias in zip(self.input_weights, self.input_biases, strict=True):
            nn.init.normal_(weight, std=1.0 / math.sqrt(weight.shape[1]))
            nn.init.zeros_(bias)
        hidden = self.output_raw.numel()
        for raw in self.hidden_raw:
            # Mean positive weight ~ 1/hidden keeps activations of order one.
            nn.init.normal_(raw, mean=_inverse_softplus(1.0 / hidden), std=0.1)
        nn.init.constant_(self.output_raw, _inverse_softplus(1.0 / hidden))

    def _pre_activations(self, u: torch.Tensor) -> list[torch.Tensor]:
        pre = [F.linear(u, self.input_weights[0], self.input_biases[0])]
        for weight, bias, raw in zip(self.input_weights[1:], self.input_biases[1:], self.hidden_raw, strict=True):
            pre.append(F.linear(u, weight, bias) + F.linear(F.softplus(pre[-1]), F.softplus(raw)))
        return pre

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """psi(u), shape (...,)."""
        return F.softplus(self._pre_activations(u)[-1]) @ F.softplus(self.output_raw)

    def gradient(self, u: torch.Tensor, skip: int = 0) -> torch.Tensor:
        """grad psi(u) in closed form w.r.t. u[..., skip:], shape (..., in_features - skip).

        Back-propagation written out: delta_K = a * softplus'(s_K),
        delta_k = (U_k^T delta_{k+1}) * softplus'(s_k), grad = sum_k W_k^T delta_k,
        with softplus' = sigmoid. ``skip`` leading coordinates are treated as a context
        whose gradient is not wanted (only the columns of W_k after them are used).
        """
        pre = self._pre_activations(u)
        delta = torch.sigmoid(pre[-1]) * F.softplus(self.output_raw)
        grad = delta @ self.input_weights[-1][:, skip:]
        for k in range(len(pre) - 2, -1, -1):
            delta = (delta @ F.softplus(self.hidden_raw[k])) * torch.sigmoid(pre[k])
            grad = grad + delta @ self.input_weights[k][:, skip:]
        return grad


class InverseLipschitzMap(nn.Module):
    r"""f: R^in -> R^out with ||f(u) - f(v)|| >= L ||u - v|| for all u, v.

    f = B o g with g(u) = grad psi(u) + L u (psi an :class:`ICNN`) and B = s Q, where Q
    has orthonormal columns (a random orthonormal basis, fixed at construction) and
    s = 1 + softplus(r) >= 1.

    With ``context_features`` c > 0 the map is conditioned on a context vector x (a decoder
    state): g(u; x) = grad_u psi([x; u]) + L u. psi is convex in [x; u] jointly, hence in
    u for every fixed x, so for a fixed context the same bound holds, and the lift needs
    only in_features columns however wide the context is.

    Args:
        in_features: Dimension of u.
        out_features: Dimension of f(u); must be >= in_features (a lift must be injective).
        lipschitz: The constant L >= 0.
        hidden_size: Width of psi.
        num_layers: Depth of psi.
        center: Make Q's columns orthogonal to the all-ones vector. Used when f(u) are
            logits: softmax ignores a constant shift, so the guarantee must hold after
            centring, and then ``||center(f(u) - f(v))|| = ||f(u) - f(v)||``.
        directions_of: Lift through a given output layer instead: W (out_features, H), the
            layer the map's result passes through. The map then adds ``A M g`` to W's input,
            with A (H, in_features) W's top right-singular directions (of W centred over
            its rows, fixed at construction) and M = (A^T C^T C A)^(-1/2), C = center(W),
            computed from the current W: every centred singular value of the lift ``W A M``
            is then s however W is trained (an orthonormal basis of the logit directions
            W A reaches, as evenly sensitive as the vocabulary lift). W itself is passed to
            :meth:`lift_weight` at each call; it is not stored here.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        lipschitz: float = 1.0,
        hidden_size: int = 128,
        num_layers: int = 2,
        center: bool = False,
        context_features: int = 0,
        directions_of: torch.Tensor | None = None,
    ):
        super().__init__()
        if out_features < in_features + int(center):
            raise ValueError(
                f"an injective lift needs out_features >= in_features{' + 1 when centred' if center else ''}, "
                f"got {in_features} -> {out_features}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.center = center
        if not 0 <= lipschitz < float("inf"):  # NaN fails too
            raise ValueError(f"the inverse-Lipschitz constant must be a finite number >= 0, got {lipschitz}")
        self.lipschitz = float(lipschitz)
        self.context_features = context_features
        self.psi = ICNN(context_features + in_features, hidden_size, num_layers)
        self.through_output = directions_of is not None
        self._output_lift_cache: tuple[tuple, torch.Tensor] | None = None
        if self.through_output:
            self.register_buffer("directions", top_right_singular_vectors(directions_of, in_features))
        else:  # the lift is stored already orthonormalised: no QR per forward
            self.register_buffer("lift_raw", torch.empty(out_features, in_features))
        self.scale_raw = nn.Parameter(torch.zeros(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.psi.reset_parameters()
        nn.init.zeros_(self.scale_raw)
        if self.through_output:  # A is W's, fixed at construction
            return
        # Q is scale-invariant in lift_raw: the draw's scale only keeps a seed's Q what it was.
        nn.init.normal_(self.lift_raw, std=self.out_features**-0.5)
        with torch.no_grad():
            self.lift_raw.copy_(self._orthonormalise(self.lift_raw))

    @property
    def scale(self) -> torch.Tensor:
        return 1.0 + F.softplus(self.scale_raw)

    def _orthonormalise(self, raw: torch.Tensor) -> torch.Tensor:
        """Q of the reduced QR of ``raw`` (centred first when ``center``)."""
        if raw.device.type == "meta":
            # from_pretrained builds the model on the meta device before loading the weights
            # (the stored Q included); torch.autocast refuses device_type="meta".
            return raw
        if raw.dtype in (torch.float16, torch.bfloat16):
            raw = raw.float()
        if self.center:
            raw = raw - raw.mean(dim=-2, keepdim=True)
        # QR in float32 even under autocast: orthonormality is the guarantee.
        with torch.autocast(device_type=raw.device.type, enabled=False):
            q, _ = torch.linalg.qr(raw, mode="reduced")
        return q

    def lift_weight(self, output_weight: torch.Tensor | None = None) -> torch.Tensor:
        """B, shape (out_features, in_features): s Q (singular values all s >= 1), or through
        an output layer W (``output_weight``) the whitened s W A M, whose centred singular
        values are all s."""
        if self.through_output:
            return self.scale * self._whitened_output_lift(output_weight)
        return self.scale * self.lift_raw

    def _whitened_output_lift(self, weight: torch.Tensor) -> torch.Tensor:
        """W A M; kept while a frozen W is unchanged (a trained W is read afresh at every call,
        so the bound follows it)."""
        if weight is None:
            raise ValueError("this map lifts through an output layer: pass its weight to lift_weight")
        key = (weight.data_ptr(), weight._version, weight.device, weight.dtype)
        cached = self._output_lift_cache
        need_grad = torch.is_grad_enabled() and weight.requires_grad
        if cached is not None and cached[0] == key and not need_grad:
            return cached[1]
        with torch.autocast(device_type=weight.device.type, enabled=False):
            wa = weight.float() @ self.directions.float()  # (V, in)
            lift = wa @ centred_whitening(wa)
        if not need_grad:
            self._output_lift_cache = (key, lift.detach())
        return lift

    def output_sigma(self, output_weight: torch.Tensor) -> float:
        """sigma_min(center(W) A): the bound W A alone would give per unit of g (reported beside s L)."""
        with torch.no_grad():
            return float(centred_min_singular_value(output_weight.float() @ self.directions.float()))

    def lower_bound(self) -> float:
        """The constant this module guarantees: s * L (>= L).

        Exact in exact arithmetic; in float32 the stored Q is orthonormal to ~1e-6, and in
        bf16 (autocast, or ``model.to(torch.bfloat16)``) its entries are rounded to 2^-8
        relative, which can move the bound by about that fraction.
        """
        return float(self.scale.detach()) * self.lipschitz

    def check_lift(self, tolerance: float = 1e-2) -> None:
        """Raise ``ValueError`` unless the stored frozen lift is what the guarantee assumes.

        A frozen lift is loaded from the checkpoint as it was saved, not rebuilt by QR, so
        a damaged or hand-edited one would silently void ``||f(u) - f(v)|| >= L ||u - v||``.
        Checks Q^T Q = I and, when centred, that the columns sum to 0, to a tolerance that
        a bf16 copy passes (its column sums are off by ~2^-9).
        """
        q = self.directions if self.through_output else self.lift_raw
        if q.device.type == "meta":
            return
        q = q.double()
        error = float((q.T @ q - torch.eye(q.shape[1], dtype=q.dtype, device=q.device)).abs().max())
        if self.center and not self.through_output:
            error = max(error, float(q.sum(dim=0).abs().max()))
        if not error <= tolerance:  # also catches NaN
            raise ValueError(f"the stored inverse-Lipschitz lift is not orthonormal{' and centred' if self.center else ''} "
                             f"(error {error:.3g} > {tolerance:g}); the guarantee would not hold")

    def inner(self, u: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """g(u; x) = grad_u psi([x; u]) + L u, shape (..., in_features); ``context`` (..., c)."""
        if self.context_features:
            if context is None:
                raise ValueError(f"this map is conditioned on a context of {self.context_features} features")
            shape = torch.broadcast_shapes(context.shape[:-1], u.shape[:-1])
            u = u.expand(*shape, -1)
            context = context.to(u.dtype).expand(*shape, -1)
            return self.psi.gradient(torch.cat([context, u], dim=-1), skip=self.context_features) + self.lipschitz * u
        return self.psi.gradient(u) + self.lipschitz * u

    def forward(self, u: torch.Tensor, lift: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """f(u), shape (..., out_features). ``lift`` lets a caller reuse one B for many calls."""
        lift = self.lift_weight() if lift is None else lift
        g = self.inner(u, context)
        return F.linear(g, lift.to(g.dtype))
