"""lossbook.RewardLaplace (chapter 08): sympy, autograd, and laplace-torch parity in float64; the bias; errors;
the bug zoo; the widget."""

import contextlib
import copy
import math
import warnings

import pytest
import sympy as sp
import torch
import torch.nn.functional as F
from torch import nn

from lossbook import RewardLaplace
from lossbook.bugzoo import reward_laplace as zoo
from lossbook.demos import reward_laplace as demo
from lossbook.derivations import reward_laplace as D
from lossbook.reward_laplace import predictive_variance
from lossbook.widgets.reward_laplace import UncertaintyExplorer

RTOL = 1e-6


def _trained(seed=0, *, bias=False, hidden=16, pairs=60, dim=3, dtype=torch.float64, activation="relu", steps=150):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(pairs, 2, dim, generator=g, dtype=dtype)
    y = torch.randint(0, 2, (pairs,), generator=g)
    torch.manual_seed(seed)
    model = demo.PairRewardModel(dim, hidden, bias=bias, activation=activation).to(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    near = torch.randn(6, dim, generator=g, dtype=dtype)
    x_test = torch.cat([near, 6 * torch.randn(6, dim, generator=g, dtype=dtype)])  # [12, dim]
    return model, x, y, x_test


def _loader(x, y, batch=7):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)


@contextlib.contextmanager
def float64_default():
    """laplace-torch's full curvature is ``linop @ torch.eye(P)`` (laplace/curvature/curvlinops.py), and curvlinops
    accumulates the product in the dtype of that identity (``zeros_like``, curvlinops/_torch_base.py): with torch's
    default float32, a float64 model's H comes out at float32 precision. Float64 parity needs float64 default."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def _upstream(laplace, model, x, y):
    la = laplace.Laplace(model, likelihood="reward_modeling", subset_of_weights="last_layer", hessian_structure="full")
    with float64_default():
        la.fit(_loader(x, y))
    return la


def _optimize(la):
    with warnings.catch_warnings():  # laplace-torch warns that link_approx defaults to probit (classification only)
        warnings.simplefilter("ignore", UserWarning)
        la.optimize_prior_precision()


def _rel(a, b):
    a, b = torch.as_tensor(a).double().reshape(-1), torch.as_tensor(b).double().reshape(-1)
    return float(((a - b).abs() / b.abs()).max())


# ------------------------------------------------------------------------------------------- laplace-torch parity
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("as_loader", [False, True])
def test_parity_with_laplace_torch(laplace, seed, bias, as_loader):
    """lambda after optimisation, the log marginal likelihood before and after, means and variances: 1e-6 relative.
    A head with a bias needs bias="include" to match (laplace-torch keeps the bias in the posterior)."""
    model, x, y, x_test = _trained(seed, bias=bias)
    up = _upstream(laplace, model, x, y)
    la = RewardLaplace(model, bias="include" if bias else "exclude")
    la.fit(_loader(x, y, batch=11)) if as_loader else la.fit(x, y)
    assert la.n_data == up.n_data == 60 and la.n_params == up.n_params
    assert torch.allclose(la.H, up.H, rtol=RTOL, atol=1e-12)
    assert _rel(la.log_marginal_likelihood(), up.log_marginal_likelihood()) <= RTOL
    _optimize(up)
    la.optimize_prior_precision()
    assert _rel(la.prior_precision, up.prior_precision) <= RTOL
    assert float(la.prior_precision) != 1.0  # it moved
    assert _rel(la.log_marginal_likelihood(), up.log_marginal_likelihood()) <= RTOL
    mean, var = la(x_test)
    up_mean, up_var = up(x_test)  # [n, 1], [n, 1, 1]
    assert mean.shape == var.shape == (12,)
    assert _rel(mean, up_mean.reshape(-1)) <= RTOL and _rel(var, up_var.reshape(-1)) <= RTOL


def test_upstream_full_curvature_is_float32_precise_under_torchs_default_dtype(laplace):
    """The surprise behind ``float64_default``: the same float64 model, fitted by laplace-torch under torch's default
    float32, gives H off by ~1e-8 relative (float32 rounding), under float64 default by ~1e-15."""
    model, x, y, _ = _trained(0)
    la = RewardLaplace(model).fit(x, y)
    up64 = _upstream(laplace, model, x, y)
    up32 = laplace.Laplace(model, "reward_modeling", subset_of_weights="last_layer", hessian_structure="full")
    up32.fit(_loader(x, y))
    scale = la.H.abs().max()
    assert float((up64.H - la.H).abs().max() / scale) < 1e-13
    assert 1e-10 < float((up32.H - la.H).abs().max() / scale) < 1e-5


def test_default_holds_the_bias_fixed_and_equals_laplace_torch_on_the_bias_free_head(laplace):
    """bias="exclude": exactly laplace-torch on the same model with the bias moved out of the head (Bradley-Terry
    cannot see it): the same lambda, evidence and variances; the means differ by the bias."""
    model, x, y, x_test = _trained(2, bias=True)
    b = model.head.bias.item()
    assert abs(b) > 1e-3
    bias_free = copy.deepcopy(model)
    bias_free.head = nn.Linear(model.head.in_features, 1, bias=False).double()
    bias_free.head.weight.data.copy_(model.head.weight.data)
    up = _upstream(laplace, bias_free, x, y)
    _optimize(up)
    la = RewardLaplace(model).fit(x, y).optimize_prior_precision()
    assert la.n_params == model.head.in_features
    assert _rel(la.prior_precision, up.prior_precision) <= RTOL
    assert _rel(la.log_marginal_likelihood(), up.log_marginal_likelihood()) <= RTOL
    mean, var = la(x_test)
    up_mean, up_var = up(x_test)
    assert _rel(mean - b, up_mean.reshape(-1)) <= RTOL and _rel(var, up_var.reshape(-1)) <= RTOL


def test_an_included_bias_adds_its_prior_variance_to_every_prediction():
    model, x, y, x_test = _trained(3, bias=True)
    inc, exc = RewardLaplace(model, bias="include").fit(x, y), RewardLaplace(model).fit(x, y)
    assert torch.all(inc.H[-1] == 0) and torch.all(inc.H[:, -1] == 0)  # zero curvature in the bias direction
    for lam in (0.3, 2.0):
        inc.prior_precision = exc.prior_precision = lam
        (m1, v1), (m0, v0) = inc(x_test), exc(x_test)
        assert torch.equal(m1, m0)
        assert torch.allclose(v1 - v0, torch.full_like(v0, 1 / lam), rtol=1e-9)


def test_seed_003_example_runs_with_upstream_and_lossbook_agrees(laplace):
    """Seed 003's setting (Linear(3, 100), ReLU, Linear(100, 1) with bias, 10 random pairs, batch 3, AdamW
    weight_decay 1e-3, 10 epochs), last-layer full: lossbook with bias="include" matches."""
    torch.manual_seed(0)
    x = torch.randn(10, 2, 3, dtype=torch.float64)
    y = torch.randint(2, size=(10,))
    net = nn.Sequential(nn.Linear(3, 100), nn.ReLU(), nn.Linear(100, 1)).double()

    class SimpleRewardModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            if len(x.shape) == 3:
                b, _, d = x.shape
                return self.net(x.reshape(-1, d)).reshape(b, 2)
            return self.net(x)

    model = SimpleRewardModel()
    opt = torch.optim.AdamW(model.parameters(), weight_decay=1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=3)
    for _ in range(10):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    model.eval()
    up = laplace.Laplace(model, likelihood="reward_modeling", subset_of_weights="last_layer", hessian_structure="full")
    up.fit(loader)
    _optimize(up)
    la = RewardLaplace(model, bias="include").fit(loader).optimize_prior_precision()
    x_test = torch.randn(5, 3, dtype=torch.float64)
    (mean, var), (up_mean, up_var) = la(x_test), up(x_test)
    assert _rel(la.prior_precision, up.prior_precision) <= RTOL
    assert _rel(la.log_marginal_likelihood(), up.log_marginal_likelihood()) <= RTOL
    assert _rel(mean, up_mean.reshape(-1)) <= RTOL and _rel(var, up_var.reshape(-1)) <= RTOL


# ------------------------------------------------------------------------------------------- autograd, closed forms
def test_curvature_is_the_autograd_hessian_of_the_summed_loss_in_the_head():
    model, x, y, _ = _trained(4, bias=True)
    la = RewardLaplace(model, bias="include").fit(x, y)
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(w, b):
        out = torch.func.functional_call(model, {**params, "head.weight": w, "head.bias": b}, (x,))
        return F.cross_entropy(out, y, reduction="sum")

    w, b = params["head.weight"], params["head.bias"]
    (hww, hwb), (hbw, hbb) = torch.func.hessian(loss, argnums=(0, 1))(w, b)
    P = w.numel()
    top = torch.cat([hww.reshape(P, P), hwb.reshape(P, 1)], 1)  # [P, P + 1]
    full = torch.cat([top, torch.cat([hbw.reshape(1, P), hbb.reshape(1, 1)], 1)])  # [P + 1, P + 1]
    assert torch.allclose(la.H, full, rtol=1e-10, atol=1e-12)
    assert torch.allclose(la.loss, loss(w, b), rtol=1e-12)


def test_variance_is_the_jacobian_sandwich_and_lml_is_differentiable():
    model, x, y, x_test = _trained(5)
    la = RewardLaplace(model).fit(x, y)
    la.prior_precision = 0.7
    jac = torch.func.jacrev(lambda w: torch.func.functional_call(model, {"head.weight": w}, (x_test,)).reshape(-1))(
        model.head.weight.detach()
    ).reshape(len(x_test), -1)
    sigma = torch.linalg.inv(la.H + 0.7 * torch.eye(la.n_params, dtype=torch.float64))
    assert torch.allclose(la(x_test)[1], torch.einsum("np,pq,nq->n", jac, sigma, jac), rtol=1e-9)
    lam = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: la.log_marginal_likelihood(prior_precision=t), (lam,))


def test_optimised_lambda_beats_the_start_and_sits_near_the_grid_maximum():
    model, x, y, _ = _trained(6, pairs=200)
    la = RewardLaplace(model).fit(x, y)
    start = float(la.log_marginal_likelihood(1.0))
    la.optimize_prior_precision()
    best = float(la.log_marginal_likelihood())
    grid = torch.logspace(-2, 3, 501, dtype=torch.float64)
    on_grid = max(float(la.log_marginal_likelihood(g)) for g in grid)
    assert best > start
    assert best >= on_grid - 1e-3


def test_float32_model_gives_the_float64_answer():
    """The Laplace algebra runs in float64 whatever the model's dtype."""
    model, x, y, x_test = _trained(7, dtype=torch.float32)
    la32 = RewardLaplace(model).fit(x, y).optimize_prior_precision()
    model64 = copy.deepcopy(model).double()
    la64 = RewardLaplace(model64).fit(x.double(), y).optimize_prior_precision()
    assert la32.H.dtype == torch.float64
    mean, var = la32(x_test)
    assert mean.dtype == var.dtype == torch.float32
    assert _rel(la32.prior_precision, la64.prior_precision) < 1e-4
    assert _rel(var, la64(x_test.double())[1]) < 1e-4


# ------------------------------------------------------------------------------------------- sympy
def test_sympy_bradley_terry_hessian_equals_softmax_ggn_with_zero_bias_curvature():
    w, b, u, v = D.head_symbols(2)
    y = sp.Symbol("y")
    nll = D.bradley_terry_nll(w, b, u, v, y)
    closed = D.bradley_terry_hessian(w, b, u, v)
    by_sympy = D.hessian(nll, [*w, b])
    assert sp.simplify(by_sympy - closed) == sp.zeros(3, 3)
    assert sp.simplify(D.softmax_ggn(w, b, u, v) - closed) == sp.zeros(3, 3)
    # the zero bias row/column comes out of the derivative itself, not only out of the closed form's construction
    assert sp.simplify(by_sympy[:, -1]) == sp.zeros(3, 1) and sp.simplify(by_sympy[-1, :]) == sp.zeros(1, 3)
    # an exact value at a point: d = r1 - r0 = log 3, so sigma = 3/4 and sigma (1 - sigma) = 3/16
    at = {w[0]: sp.log(3), w[1]: 5, b: 7, u[0]: 0, u[1]: 1, v[0]: 1, v[1]: 1}
    expected = sp.Matrix([[sp.Rational(3, 16), 0, 0], [0, 0, 0], [0, 0, 0]])
    assert sp.simplify(by_sympy.subs(at)) == expected
    assert sp.simplify(D.softmax_ggn(w, b, u, v).subs(at)) == expected
    # the two forms of the loss: equal for y = 0 directly, for y = 1 through exp (injective on the reals)
    assert sp.simplify(D.softmax_pair_nll(w, b, u, v, 0) - nll.subs(y, 0)) == 0
    assert sp.simplify(sp.exp(D.softmax_pair_nll(w, b, u, v, 1) - nll.subs(y, 1))) == 1
    # wrong variants, at the same point: sigma(1 - sigma) frozen at d = 0 (1/4 instead of 3/16); the sum of the
    # items' features instead of their difference (g = (1, 2, 2): the bias gets curvature)
    frozen = D.sigmoid(0) * (1 - D.sigmoid(0)) * sp.Matrix([v[0] - u[0], v[1] - u[1], 0]) * sp.Matrix(
        [[v[0] - u[0], v[1] - u[1], 0]]
    )
    assert frozen.subs(at)[0, 0] == sp.Rational(1, 4)
    g = sp.Matrix([u[0] + v[0], u[1] + v[1], 2])
    summed = D.sigmoid(reward_difference(w, b, u, v)) * (1 - D.sigmoid(reward_difference(w, b, u, v))) * g * g.T
    assert sp.simplify(summed.subs(at)) == sp.Rational(3, 16) * sp.Matrix([[1, 2, 2], [2, 4, 4], [2, 4, 4]])


def reward_difference(w, b, u, v):
    return D.reward(w, b, v) - D.reward(w, b, u)


def test_sympy_laplace_evidence_and_predictive_variance():
    L, h, lam = sp.symbols("L h lam", positive=True)
    m = sp.Symbol("m", real=True)
    lhs = D.laplace_log_evidence_1d(L, h, lam, m)
    assert sp.simplify(lhs - D.laplace_log_evidence_formula_1d(L, h, lam, m)) == 0
    wrong = -L - (sp.log(h + lam) + lam * m**2) / 2  # forgot log det of the prior
    point = {L: 1, h: 2, lam: 2, m: 0}  # exact values: -1 - log(2)/2, and -1 - log(2) for the wrong variant
    assert sp.simplify(lhs.subs(point) - (-1 - sp.log(2) / 2)) == 0
    assert sp.simplify(wrong.subs(point) - (-1 - sp.log(2))) == 0
    a, c, d, e, f = sp.symbols("a c d e f", real=True)
    var, sandwich = D.linearised_reward_variance([a, c], sp.Matrix([[d, 0], [e, f]]))
    assert sp.simplify(var - sandwich) == 0
    ones = {a: 1, c: 1, d: 1, e: 1, f: 1}  # J = (1, 1), Sigma = [[1, 1], [1, 2]]: J Sigma J^T = 5
    assert sp.simplify(var.subs(ones)) == 5
    assert (a**2 * d**2 + c**2 * f**2).subs(ones) == 2  # the diagonal only is wrong
    # lossbook's numbers are the formula's: one parameter, H = h
    model, x, y, _ = _trained(8, hidden=1)
    la = RewardLaplace(model).fit(x, y)
    hv, mv, Lv = float(la.H[0, 0]), float(la.theta_map[0]), float(la.loss)
    expected = D.laplace_log_evidence_formula_1d(Lv, hv, sp.Rational(3, 2), mv)
    assert abs(float(la.log_marginal_likelihood(1.5)) - float(expected)) < 1e-10


# ------------------------------------------------------------------------------------------- errors
def test_bad_inputs_get_clear_errors():
    model, x, y, x_test = _trained(9)
    la = RewardLaplace(model)
    with pytest.raises(RuntimeError, match="not fitted"):
        la(x_test)
    with pytest.raises(ValueError, match=r"x_pairs must be \[pairs, 2, \.\.\.\].*\[60, 3\]"):
        la.fit(x[:, 0], y)
    with pytest.raises(ValueError, match=r"could not score the items of x_pairs \[60, 2\].*120 items of shape \[\]"):
        la.fit(x[:, :, 0], y)
    with pytest.raises(ValueError, match=r"y must be \[pairs\] = \[60\].*\[60, 1\]"):
        la.fit(x, y[:, None])
    with pytest.raises(TypeError, match="y must hold integer"):
        la.fit(x, y.double())
    with pytest.raises(ValueError, match="0 or 1"):
        la.fit(x, y + 1)
    with pytest.raises(TypeError, match="y .* is missing"):
        la.fit(x)
    with pytest.raises(ValueError, match="bias must be one of"):
        RewardLaplace(model, bias="drop")
    la.fit(x, y)
    for bad in (0.0, -1.0, float("nan"), [1.0, 2.0]):
        with pytest.raises(ValueError, match="prior_precision must be"):
            la.prior_precision = bad
    with pytest.raises(ValueError, match=r"x must be \[batch, \.\.\.\]"):
        la(x_test[:0])


def test_models_that_are_not_linear_reward_heads_are_refused():
    x = torch.randn(8, 2, 3)
    y = torch.randint(0, 2, (8,))
    two_outputs = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"nn.Linear\(hidden, 1\)"):
        RewardLaplace(two_outputs).fit(x, y)
    squashed = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1), nn.Tanh())
    with pytest.raises(ValueError, match=r"nn.Linear\(hidden, 1\).*Tanh"):
        RewardLaplace(squashed).fit(x, y)
    head = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    with pytest.raises(ValueError, match="something runs after the head"):
        RewardLaplace(_Scaled(head), last_layer_name="inner.2").fit(x, y)


def test_predictive_variance_and_the_evidence_refuse_what_they_would_broadcast():
    H = torch.eye(3, dtype=torch.float64)
    jac = torch.ones(2, 3, dtype=torch.float64)
    assert torch.allclose(predictive_variance(jac, H, 1.0), torch.full((2,), 1.5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"jac must be \[batch, params\] = \[batch, 3\].*got shape \[3\]"):
        predictive_variance(jac[0], H, 1.0)
    with pytest.raises(ValueError, match=r"jac must be .*got shape \[2, 4\]"):
        predictive_variance(torch.ones(2, 4, dtype=torch.float64), H, 1.0)
    with pytest.raises(ValueError, match=r"H must be a square"):
        predictive_variance(jac, torch.ones(3, 2, dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match="prior_precision must be one positive number"):
        predictive_variance(jac, H, torch.tensor([1.0, 2.0, 3.0]))  # would broadcast into a diagonal prior
    with pytest.raises(ValueError, match="prior_precision must be positive"):
        predictive_variance(jac, H, -0.5)  # H - 0.5 I is still positive definite here: nothing else would catch it
    model, x, y, _ = _trained(9)
    la = RewardLaplace(model).fit(x, y)
    for bad in (torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor(-1.0, requires_grad=True)):
        with pytest.raises(ValueError, match="prior_precision must be one positive, finite number"):
            la.log_marginal_likelihood(bad)
    with pytest.raises(ValueError, match="n_steps"):
        la.optimize_prior_precision(n_steps=0)


class _Scaled(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return 2 * self.inner(x)


def test_dropout_and_batch_norm_models_are_evaluated_in_eval_mode_and_left_as_they_were():
    torch.manual_seed(12)
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 1)).double()
    x = torch.randn(30, 2, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (30,))
    model.train()
    la = RewardLaplace(model).fit(x, y)
    assert model.training
    x_test = torch.randn(4, 3, dtype=torch.float64)
    mean1, var1 = la(x_test)
    mean2, var2 = la(x_test)  # deterministic: dropout is off during prediction
    assert torch.equal(mean1, mean2) and torch.equal(var1, var2)
    model.eval()
    assert torch.allclose(mean1, model(x_test).reshape(-1).detach())


def test_a_model_trained_after_fit_must_be_fitted_again():
    model, x, y, x_test = _trained(10)
    la = RewardLaplace(model).fit(x, y)
    la(x_test)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    with pytest.raises(RuntimeError, match="changed since fit"):
        la(x_test)
    mean, _ = la.fit(x, y)(x_test)  # fitted again: the model as it is now
    assert torch.allclose(mean, model(x_test).reshape(-1).detach())


# Writes that change a model's values without bumping the parameters' version counters: fused AdamW
# (transformers' default optimizer with torch >= 2.8; it runs on CPU here) and the `.data` routes.
def _fused_adamw_steps(model, x, y):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def _data_add(model, x, y):
    model.net[0].weight.data.add_(1e-6)  # the body: phi(x) moves, the head does not


def _data_copy(model, x, y):
    model.net[0].weight.data.copy_(model.net[0].weight.detach() * 1.001)


def _data_assign(model, x, y):
    model.head.weight.data = model.head.weight.detach() + 1e-6


def _vector_to_parameters(model, x, y):
    flat = torch.nn.utils.parameters_to_vector(model.parameters())
    torch.nn.utils.vector_to_parameters(flat + 1e-6, model.parameters())


_WRITES = {
    "fused_adamw": _fused_adamw_steps,
    "data_add": _data_add,
    "data_copy": _data_copy,
    "data_assign": _data_assign,
    "vector_to_parameters": _vector_to_parameters,
}
_USES = {
    "call": lambda la, x_test: la(x_test),
    "log_marginal_likelihood": lambda la, x_test: la.log_marginal_likelihood(),
    "optimize_prior_precision": lambda la, x_test: la.optimize_prior_precision(n_steps=5),
}


@pytest.fixture(scope="module")
def trained_14():
    return _trained(14)


@pytest.mark.parametrize("use", list(_USES))
@pytest.mark.parametrize("write", list(_WRITES))
def test_a_model_written_after_fit_without_a_version_bump_is_refused(trained_14, write, use):
    """By content: none of these writes bumps ``p._version``, so a version-counter check misses them all."""
    model, x, y, x_test = copy.deepcopy(trained_14)
    la = RewardLaplace(model).fit(x, y)
    _USES[use](la, x_test)  # fine before the write
    versions, before = [p._version for p in model.parameters()], copy.deepcopy(model.state_dict())
    _WRITES[write](model, x, y)
    assert [p._version for p in model.parameters()] == versions  # the route really is invisible to versions
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # and it wrote
    stale = r"the model changed since fit\(\): '[\w.]+' holds other values.*call fit\(\) again"
    with pytest.raises(RuntimeError, match=stale):
        _USES[use](la, x_test)
    la.fit(x, y)
    _USES[use](la, x_test)  # fitted again: accepted
    assert torch.allclose(la(x_test)[0], model(x_test).reshape(-1).detach(), rtol=1e-12)


def test_an_unchanged_model_is_accepted_however_often_it_is_used():
    """No false positive: eval()/train() switches, in-place writes of the same values (which bump the version
    counters), every method twice."""
    model, x, y, x_test = _trained(16, bias=True)
    la = RewardLaplace(model, bias="include").fit(x, y)
    model.eval()
    model.train()
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.0)  # same values, version bumped
    saved = model.net[0].weight.detach().clone()
    model.net[0].weight.data.add_(1.0)
    model.net[0].weight.data.copy_(saved)  # changed and changed back: the values fit saw
    for _ in range(2):
        mean, var = la(x_test)
        lml = la.log_marginal_likelihood()
        la.optimize_prior_precision(n_steps=5)
        la.predictive_std(x_test)
        assert la.posterior_covariance.shape == (la.n_params, la.n_params)
    assert torch.allclose(mean, model(x_test).reshape(-1).detach(), rtol=1e-12)
    assert torch.isfinite(lml) and bool((var > 0).all())


def test_a_batch_norm_forward_in_train_mode_after_fit_is_refused():
    """The running statistics are state too: they change phi(x) in eval mode without any parameter moving."""
    torch.manual_seed(17)
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1)).double()
    x = torch.randn(30, 2, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (30,))
    la = RewardLaplace(model).fit(x, y)
    model.train()
    model(x[:, 0])  # updates running_mean / running_var
    with pytest.raises(RuntimeError, match=r"changed since fit\(\): '1\.running_mean'"):
        la(x[:, 0])


def test_call_names_x_when_the_feature_width_is_wrong():
    model, x, y, x_test = _trained(18)
    la = RewardLaplace(model).fit(x, y)
    with pytest.raises(
        ValueError, match=r"could not score x \[12, 2\] float64, read as \[batch, \.\.\.\]; fit\(\) scored items \[3\] "
        r"float64"
    ):
        la(x_test[:, :2])


def test_call_names_x_when_its_dtype_is_not_the_model_s():
    model, x, y, x_test = _trained(19, dtype=torch.float32)
    la = RewardLaplace(model).fit(x, y)
    with pytest.raises(ValueError, match=r"could not score x \[12, 3\] float64.*fit\(\) scored items \[3\] float32"):
        la(x_test.double())
    assert la(x_test)[0].dtype == torch.float32


def test_laplace_torch_keeps_a_copy_of_the_model_made_at_construction(laplace):
    """laplace/lllaplace.py, LLLaplace.__init__: ``FeatureExtractor(deepcopy(model), ...)``. Train the model further
    and fit again: laplace-torch's means are still the old model's (the bug zoo's StaleModelCopy); lossbook's are the
    model's as it is now."""
    model, x, y, x_test = _trained(13)
    old = model(x_test).reshape(-1).detach().clone()
    up = laplace.Laplace(model, likelihood="reward_modeling", subset_of_weights="last_layer", hessian_structure="full")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(50):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    now = model(x_test).reshape(-1).detach()
    assert (now - old).abs().max() > 0.1
    with float64_default():
        up.fit(_loader(x, y))
    assert torch.allclose(up(x_test)[0].reshape(-1), old, rtol=1e-10, atol=1e-12)
    assert torch.allclose(RewardLaplace(model).fit(x, y)(x_test)[0], now, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------- bug zoo and widget
def test_lossbook_passes_the_bug_zoo_check():
    result = zoo.check_reward_laplace(RewardLaplace)
    assert result.passed, str(result)


@pytest.mark.parametrize(
    "bug, broken",
    [
        (zoo.BiasInPosterior, "var"),
        (zoo.StaleModelCopy, "mean"),
        (zoo.ProbitAsReward, "mean"),
        (zoo.Float32Determinant, "lml"),
    ],
)
def test_every_bug_fails_the_check(bug, broken):
    result = zoo.check_reward_laplace(bug)
    assert not result.passed
    assert getattr(result, f"{broken}_error") > 1e-4, str(result)


def test_explorer_shows_lossbook_numbers_and_restores_lambda():
    model, x, y, _ = _trained(11, dim=2)
    la = RewardLaplace(model).fit(x, y)
    la.prior_precision = 2.0
    explorer = UncertaintyExplorer(la, truth=demo.true_reward)
    explorer.distance.value = 5.0
    explorer.log_lambda.value = 1.0
    assert float(la.prior_precision) == 2.0
    la.prior_precision = 10.0
    mean, var = la(torch.tensor([[5.0, 0.0]], dtype=torch.float64))
    assert math.isclose(explorer.mean, float(mean[0]), rel_tol=1e-12)
    assert math.isclose(explorer.std, float(var[0]) ** 0.5, rel_tol=1e-9)
    assert f"{explorer.mean:+.4f}" in explorer.html.value and "<svg" in explorer.html.value


def test_the_hook_reads_the_head_input_and_leaves_the_model_as_it_was():
    """``last_layer_features`` (the hook chapter 08 renders): phi(x) is the body's output, computed here without
    any hook; the hook is removed and the training mode restored, also when the forward fails."""
    model, x, y, x_test = _trained(20, bias=True)
    model.train()
    la = RewardLaplace(model, bias="include").fit(x, y)
    out, phi = la.last_layer_features(x_test)
    with torch.no_grad():
        want_phi = model.net(x_test)  # [12, hidden]: the input of model.head
        want_out = model.head(want_phi).reshape(-1)
    assert torch.equal(phi, want_phi) and torch.equal(out, want_out)
    assert model.training and not model.head._forward_hooks
    _, jac = la.rewards_and_jacobians(x_test)
    assert torch.equal(jac, torch.cat([want_phi, torch.ones(12, 1, dtype=torch.float64)], dim=1))
    with pytest.raises(ValueError, match=r"could not score x \[12, 2\]"):
        la(x_test[:, :2])
    assert model.training and not model.head._forward_hooks
