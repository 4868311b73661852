"""textvae.models.invlip: the ICNN's closed-form gradient and the inverse-Lipschitz guarantee.

The bound ``||f(u) - f(v)|| >= s L ||u - v||`` is checked as a property over random
shapes, constants, parameters and points, and the same checker is shown to reject maps
that break one ingredient of the proof (convexity of psi, or the ``L u`` term).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.models import default_dtype, perturb_parameters
from textvae.models.invlip import ICNN, InverseLipschitzMap

# ----------------------------------------------------------------------------- helpers


def autograd_gradient(psi: ICNN, u: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        u = u.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(psi(u).sum(), u)
    return grad


def assert_inverse_lipschitz(fmap: InverseLipschitzMap, u: torch.Tensor, v: torch.Tensor, bound: float) -> None:
    """``||f(u) - f(v)|| >= bound ||u - v||`` for every row, up to rounding of the dtype.

    The slack is a few hundred ulps of the magnitudes involved (not of the difference), so
    in float64 it is ~1e-13 relative and in float32 ~1e-5: a genuine violation is far larger.
    """
    with torch.no_grad():
        fu, fv = fmap(u), fmap(v)
    eps = torch.finfo(u.dtype).eps
    lhs = (fu - fv).norm(dim=-1)
    rhs = bound * (u - v).norm(dim=-1)
    slack = 256 * eps * (fu.norm(dim=-1) + fv.norm(dim=-1) + bound * (u.norm(dim=-1) + v.norm(dim=-1)))
    bad = (lhs < rhs - slack).flatten()
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        ratio = float(lhs.flatten()[i] / (u - v).flatten(0, -2)[i].norm())
        raise AssertionError(f"{int(bad.sum())} of {bad.numel()} pairs violate the bound; e.g. ratio {ratio:.9g} < {bound:.9g}")


def make_map(in_features, out_features, lipschitz, hidden, layers, center, param_scale, seed, dtype):
    """A map built in ``dtype`` (its lift is orthonormalised once, at that precision),
    with every parameter moved off its init by N(0, param_scale^2) noise."""
    torch.manual_seed(seed)
    with default_dtype(dtype):
        fmap = InverseLipschitzMap(in_features, out_features, lipschitz, hidden, layers, center=center)
    perturb_parameters(fmap, param_scale, seed)
    return fmap


# ------------------------------------------------------------- closed-form gradient of psi


@pytest.mark.parametrize(
    "in_features,hidden,layers",
    [(1, 1, 1), (3, 8, 1), (5, 16, 2), (4, 7, 3), (9, 32, 4)],
)
@pytest.mark.parametrize("shape", [(7,), (2, 5), (3, 1, 4)])
def test_icnn_closed_form_gradient_matches_autograd_float64(in_features, hidden, layers, shape):
    torch.manual_seed(in_features * 100 + layers)
    psi = ICNN(in_features, hidden, layers).double()
    perturb_parameters(psi, 1.0, seed=layers)  # away from the init: negative raw weights too
    u = 3 * torch.randn(*shape, in_features, dtype=torch.float64)
    closed = psi.gradient(u)
    assert closed.shape == u.shape
    torch.testing.assert_close(closed, autograd_gradient(psi, u), rtol=0, atol=1e-5)


def test_icnn_gradient_needs_no_autograd():
    psi = ICNN(4, 8, 3)
    u = torch.randn(5, 4)
    with torch.no_grad():
        grad = psi.gradient(u)
    assert not grad.requires_grad
    torch.testing.assert_close(grad, autograd_gradient(psi, u))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), layers=st.integers(1, 4), param_scale=st.floats(0.0, 3.0))
def test_icnn_gradient_is_monotone_so_psi_is_convex(seed, layers, param_scale):
    """<grad psi(u) - grad psi(v), u - v> >= 0: the step of the proof that needs convexity."""
    torch.manual_seed(seed)
    psi = ICNN(5, 12, layers).double()
    perturb_parameters(psi, param_scale, seed)
    u, v = 4 * torch.randn(64, 5, dtype=torch.float64), 4 * torch.randn(64, 5, dtype=torch.float64)
    inner = ((psi.gradient(u) - psi.gradient(v)) * (u - v)).sum(-1)
    assert bool((inner >= -1e-12).all()), float(inner.min())


# ----------------------------------------------------------------- the inverse-Lipschitz bound

finite = st.floats(-50.0, 50.0, allow_nan=False, allow_infinity=False)
# No subnormal L: L * x then underflows, and f(u) = f(v) in floating point whatever the map.
lipschitz_values = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0]), st.floats(0.0, 10.0, allow_subnormal=False))


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    in_features=st.integers(1, 6),
    extra=st.integers(0, 12),
    center=st.booleans(),
    lipschitz=lipschitz_values,
    hidden=st.integers(1, 12),
    layers=st.integers(1, 3),
    param_scale=st.sampled_from([0.0, 0.3, 1.0, 3.0]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**31 - 1),
    point_scale=st.sampled_from([0.01, 1.0, 10.0, 100.0]),
)
def test_map_is_inverse_lipschitz(data, in_features, extra, center, lipschitz, hidden, layers, param_scale, dtype, seed, point_scale):
    out_features = in_features + int(center) + extra
    fmap = make_map(in_features, out_features, lipschitz, hidden, layers, center, param_scale, seed, dtype)
    bound = fmap.lower_bound()
    assert bound >= lipschitz
    # One pair chosen by hypothesis (edge values, shrinkable) ...
    u1 = torch.tensor(data.draw(st.lists(finite, min_size=in_features, max_size=in_features)), dtype=dtype)
    v1 = torch.tensor(data.draw(st.lists(finite, min_size=in_features, max_size=in_features)), dtype=dtype)
    if bool((u1 != v1).any()):
        assert_inverse_lipschitz(fmap, u1[None], v1[None], bound)
    # ... and a batch of random pairs at several distances, batched in two leading dims.
    generator = torch.Generator().manual_seed(seed)
    u = point_scale * torch.randn(4, 8, in_features, generator=generator, dtype=torch.float64)
    gaps = torch.logspace(-2, 1, 8, dtype=torch.float64).view(1, 8, 1) * point_scale
    v = u + gaps * torch.randn(4, 8, in_features, generator=generator, dtype=torch.float64)
    assert_inverse_lipschitz(fmap, u.to(dtype), v.to(dtype), bound)
    assert_inverse_lipschitz(fmap, u.to(dtype), v.to(dtype), lipschitz)


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("in_features,out_features", [(1, 2), (3, 4), (6, 40), (16, 1000)])
@pytest.mark.parametrize("param_scale", [0.0, 2.0])
def test_lift_has_orthonormal_columns_scaled_by_s(center, in_features, out_features, param_scale):
    fmap = make_map(in_features, out_features, 1.0, 4, 1, center, param_scale, 3, torch.float32)
    assert not isinstance(fmap.lift_raw, torch.nn.Parameter)  # frozen: a buffer, no gradient
    lift = fmap.lift_weight().detach()
    s = float(fmap.scale.detach())
    assert s >= 1.0
    q = lift / s
    torch.testing.assert_close(q.T @ q, torch.eye(in_features), atol=1e-5, rtol=0)
    column_sums = q.sum(dim=0)
    if center:
        assert float(column_sums.abs().max()) < 1e-5
    else:  # a free lift has no reason to be orthogonal to 1: the centred test would fail without centring
        assert float(column_sums.abs().max()) > 1e-3
    assert fmap.lower_bound() == pytest.approx(s * fmap.lipschitz)


def test_lower_bound_is_s_times_l():
    fmap = InverseLipschitzMap(3, 8, lipschitz=2.0)
    assert fmap.lower_bound() == pytest.approx(2.0 * float(fmap.scale.detach()))
    with pytest.raises(ValueError, match=">= 0"):
        InverseLipschitzMap(3, 8, lipschitz=-1.0)


def test_lift_must_be_injective():
    with pytest.raises(ValueError, match="injective"):
        InverseLipschitzMap(4, 3)
    with pytest.raises(ValueError, match="centred"):
        InverseLipschitzMap(4, 4, center=True)
    InverseLipschitzMap(4, 5, center=True)


# ---------------------------------------------- broken variants: the checker can fail


class _WithoutLinearTerm(InverseLipschitzMap):
    """g(u) = grad psi(u): no ``L u``; grad psi saturates, so far-apart points collide."""

    def inner(self, u, context=None):
        return self.psi.gradient(u)


class _ConcavePsi(InverseLipschitzMap):
    """psi replaced by the concave -5 psi: g = L u - 5 grad psi folds back on itself."""

    def inner(self, u, context=None):
        return self.lipschitz * u - 5 * self.psi.gradient(u)


class _SignedICNN(ICNN):
    """An ICNN with negative weights forced onto the hidden units: psi is no longer convex."""

    def _pre_activations(self, u):
        pre = [F.linear(u, self.input_weights[0], self.input_biases[0])]
        for weight, bias, raw in zip(self.input_weights[1:], self.input_biases[1:], self.hidden_raw, strict=True):
            pre.append(F.linear(u, weight, bias) - F.linear(F.softplus(pre[-1]), F.softplus(raw)))
        return pre


class _NegativeHiddenWeights(InverseLipschitzMap):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.psi = _SignedICNN(self.in_features, 8, 2)
        with torch.no_grad():
            self.psi.output_raw.fill_(3.0)

    def inner(self, u, context=None):
        return autograd_gradient(self.psi, u) + self.lipschitz * u


@pytest.mark.parametrize("broken", [_WithoutLinearTerm, _ConcavePsi, _NegativeHiddenWeights])
def test_checker_catches_maps_that_break_the_proof(broken):
    torch.manual_seed(0)
    u, v = 3 * torch.randn(2000, 3, dtype=torch.float64), 3 * torch.randn(2000, 3, dtype=torch.float64)
    torch.manual_seed(0)
    with default_dtype(torch.float64):
        fmap = broken(3, 10, lipschitz=1.0, hidden_size=8, center=True)
    with pytest.raises(AssertionError, match="violate the bound"):
        assert_inverse_lipschitz(fmap, u, v, fmap.lower_bound())
    # The intact map with the same seed and points passes.
    torch.manual_seed(0)
    with default_dtype(torch.float64):
        intact = InverseLipschitzMap(3, 10, lipschitz=1.0, hidden_size=8, center=True)
    assert_inverse_lipschitz(intact, u, v, intact.lower_bound())


# -------------------------------------------------------------------- no_grad and autocast


def test_map_runs_under_no_grad_and_bf16_autocast_on_cpu():
    torch.manual_seed(0)
    fmap = InverseLipschitzMap(36, 500, lipschitz=1.0, hidden_size=32, num_layers=2, center=True)
    u = torch.randn(8, 36)
    reference = fmap(u).detach()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = fmap(u)
    assert out.shape == (8, 500)
    assert not out.requires_grad
    assert bool(torch.isfinite(out).all())
    # bf16 has ~3 significant digits
    torch.testing.assert_close(out.float(), reference, rtol=5e-2, atol=5e-2 * float(reference.abs().max()))


def test_map_compiles_as_one_graph_without_autograd_grad():
    # fullgraph=True fails on any graph break, e.g. a torch.autograd.grad call inside.
    torch.manual_seed(0)
    fmap = InverseLipschitzMap(12, 60, lipschitz=2.0, hidden_size=16, num_layers=3, center=True)
    u = torch.randn(5, 12)
    compiled = torch.compile(fmap, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(u), fmap(u))


def test_map_trains_under_bf16_autocast_on_cpu():
    fmap = InverseLipschitzMap(6, 20, center=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fmap(torch.randn(4, 6)).float().pow(2).mean()
    loss.backward()
    grads = [p.grad for p in fmap.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)


# ------------------------------------------------------------------------------ context


def test_icnn_gradient_with_a_skipped_context_is_the_tail_of_the_full_gradient():
    torch.manual_seed(0)
    psi = ICNN(7, 10, 3).double()
    perturb_parameters(psi, 1.0, seed=1)
    u = torch.randn(6, 7, dtype=torch.float64)
    torch.testing.assert_close(psi.gradient(u, skip=3), psi.gradient(u)[:, 3:])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), lipschitz=st.floats(0.1, 8.0),
       param_scale=st.sampled_from([0.0, 1.0, 3.0]), point_scale=st.sampled_from([0.01, 1.0, 30.0]))
def test_map_conditioned_on_a_context_is_inverse_lipschitz_for_every_fixed_context(
        seed, lipschitz, param_scale, point_scale):
    torch.manual_seed(seed)
    with default_dtype(torch.float64):
        fmap = InverseLipschitzMap(4, 30, lipschitz, 12, 2, center=True, context_features=5)
    perturb_parameters(fmap, param_scale, seed)
    generator = torch.Generator().manual_seed(seed)
    context = 3 * torch.randn(16, 1, 5, generator=generator, dtype=torch.float64)
    u = point_scale * torch.randn(16, 6, 4, generator=generator, dtype=torch.float64)
    v = u + point_scale * torch.randn(16, 6, 4, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        lhs = (fmap(u, context=context) - fmap(v, context=context)).norm(dim=-1)
    assert bool((lhs >= fmap.lower_bound() * (u - v).norm(dim=-1) * (1 - 1e-9)).all())


def test_a_context_map_refuses_to_run_without_its_context():
    fmap = InverseLipschitzMap(3, 10, 1.0, 4, 1, context_features=2)
    with pytest.raises(ValueError, match="context"):
        fmap(torch.randn(2, 3))
