"""Chapter 08: a Bradley-Terry reward model made Bayesian by a last-layer Laplace approximation.

The reward model ``r(x) = w . phi(x) (+ b)`` ends in an ``nn.Linear(hidden, 1)``. It was trained on pairs with the
Bradley-Terry likelihood P(item 1 preferred) = sigmoid(r_1 - r_0), written as a 2-way softmax cross-entropy over
``(r_0, r_1)`` (chapter 07 shows the two are the same loss). Keeping ``phi`` fixed and putting a Gaussian prior
N(0, 1/lambda I) on the head's parameters theta, the Laplace approximation of the posterior is N(theta_MAP, Sigma):

* curvature, the generalised Gauss-Newton (for this loss also the exact Hessian), one term per pair i:
  ``H = sum_i p_i (1 - p_i) g_i g_i^T`` with ``p_i = sigmoid(r_i1 - r_i0)`` and ``g_i = J(x_i1) - J(x_i0)``, the
  difference of the two items' last-layer Jacobians ``J(x) = dr/dtheta = phi(x)`` (``[phi(x), 1]`` with a bias);
* posterior precision ``H + lambda I``, covariance ``Sigma = (H + lambda I)^-1``;
* log marginal likelihood ``log p(D | lambda) ~ -loss - 1/2 (log det(H + lambda I) - P log lambda
  + lambda |theta_MAP|^2)``, ``loss`` the summed cross-entropy, P the number of head parameters;
* predictive reward ``r(x) ~ N(r_MAP(x), J(x) Sigma J(x)^T)`` (the linearised, "GLM" predictive).

This is what laplace-torch computes for ``Laplace(model, likelihood="reward_modeling",
subset_of_weights="last_layer", hessian_structure="full")`` (laplace/baselaplace.py: ``FullLaplace``,
``ParametricLaplace.log_marginal_likelihood``; laplace/lllaplace.py: ``FullLLLaplace``), and ``RewardLaplace``
agrees with it to 1e-6 relative in float64 (tests/test_reward_laplace.py). MacKay 1992 (the evidence framework);
Daxberger et al. 2021, "Laplace Redux"; Yang et al. 2024, "Bayesian reward models for LLM alignment".

The bias. Bradley-Terry sees only differences r_1 - r_0, in which a bias cancels: g_i has a 0 in the bias
coordinate, so the bias gets zero curvature and its posterior variance stays the prior's 1/lambda, added to every
prediction alike (laplace-torch does this). ``RewardLaplace(model)`` (``bias="exclude"``) holds the bias at its
trained value instead, outside the posterior: the variance then measures only what the data can inform, the
log marginal likelihood is that of the bias-free head, and the means are unchanged. ``bias="include"`` treats the
bias as laplace-torch does.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ._checks import check_integer, check_tensor, shape_str

__all__ = ["RewardLaplace", "predictive_variance"]

_BIAS_MODES = ("exclude", "include")


class RewardLaplace:
    """Last-layer Laplace approximation of a Bradley-Terry reward model whose last module is ``nn.Linear(hidden, 1)``.

    ``la = RewardLaplace(model)``; ``la.fit(x_pairs, y)`` with ``x_pairs`` ``[pairs, 2, ...]`` and ``y`` ``[pairs]``
    the preferred item (0 or 1, laplace-torch's ``reward_modeling`` convention), or ``la.fit(loader)`` of such
    batches; ``la.optimize_prior_precision()`` (laplace-torch's defaults); ``la.log_marginal_likelihood()``;
    ``mean, var = la(x)`` with ``x`` ``[batch, ...]``, each ``[batch]``.

    The model scores single items (``[batch, ...] -> [batch, 1]`` or ``[batch]``) in place, not copied: each method
    that uses the fit refuses a model changed since ``fit``, compared by content with a copy of its ``state_dict``
    taken at ``fit`` (the model's size again; ~50 us a check on chapter 08's model). The Laplace algebra is float64
    on the CPU; ``mean`` and ``var`` come back in the model output's dtype and device.

    ``bias``: a head's bias gets zero curvature (it cancels in r_1 - r_0), so in the posterior it keeps its prior
    variance 1/lambda, added to every prediction alike. ``"exclude"`` (default) holds it at its trained value,
    outside the posterior (the mean keeps it); ``"include"`` puts it in, as laplace-torch does.
    """

    def __init__(self, model: nn.Module, *, bias: str = "exclude", last_layer_name: str | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if bias not in _BIAS_MODES:
            raise ValueError(f"bias must be one of {_BIAS_MODES}, got {bias!r}")
        self.model = model
        self.bias = bias
        self.last_layer_name = last_layer_name
        self.head: nn.Linear | None = None
        if last_layer_name is not None:
            modules = dict(model.named_modules())
            if last_layer_name not in modules:
                raise ValueError(f"last_layer_name={last_layer_name!r} is not a module of the model")
            self.head = self._check_head(last_layer_name, modules[last_layer_name])
        self._prior_precision = torch.tensor(1.0, dtype=torch.float64)
        self.H: torch.Tensor | None = None  # [params, params]
        self.theta_map: torch.Tensor | None = None  # [params]
        self.loss: torch.Tensor | None = None  # [] summed cross-entropy over the pairs
        self.n_data = 0
        self._fitted_state: dict[str, torch.Tensor] | None = None  # the model's state_dict as fit saw it
        self._fitted_items = ""  # "[3] float32": the item shape and dtype fit scored, for __call__'s errors

    # ---------------------------------------------------------------- the head and its features
    @staticmethod
    def _check_head(name: str, module: nn.Module) -> nn.Linear:
        if not isinstance(module, nn.Linear) or module.out_features != 1:
            raise ValueError(
                f"the reward model's last layer must be an nn.Linear(hidden, 1); {name!r} is {module!r}"
            )
        return module

    def _find_head(self, x: torch.Tensor) -> None:
        """The last leaf module executed in a forward pass, as laplace-torch's FeatureExtractor finds it."""
        order, handles = [], []
        for name, module in self.model.named_modules():
            if len(list(module.children())) == 0:
                handles.append(module.register_forward_hook(lambda m, i, o, name=name: order.append(name)))
        was_training = self.model.training
        self.model.eval()  # as for every forward here: dropout off, batch norm on its running statistics
        try:
            with torch.no_grad():
                self.model(x[:1])
        finally:
            for h in handles:
                h.remove()
            self.model.train(was_training)
        if not order:
            raise ValueError("the model ran no module in its forward pass; it needs an nn.Linear(hidden, 1) last")
        self.last_layer_name = order[-1]
        self.head = self._check_head(order[-1], dict(self.model.named_modules())[order[-1]])

    @property
    def n_params(self) -> int:
        """P: the head parameters in the posterior (hidden, plus 1 for an included bias)."""
        if self.head is None:
            raise RuntimeError("RewardLaplace is not fitted: call fit() first")
        return self.head.in_features + int(self._bias_in_posterior)

    @property
    def _bias_in_posterior(self) -> bool:
        return self.head is not None and self.head.bias is not None and self.bias == "include"

    def _head_params(self) -> torch.Tensor:
        parts = [self.head.weight.detach().reshape(-1)]
        if self._bias_in_posterior:
            parts.append(self.head.bias.detach().reshape(-1))
        return torch.cat(parts).to("cpu", torch.float64)  # [params]

    def rewards_and_jacobians(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``r_MAP(x)`` ``[batch]`` (model dtype and device) and ``J(x) = dr/dtheta`` ``[batch, params]`` (float64,
        CPU): ``phi(x)``, the input of the last Linear, with a column of ones appended for an included bias."""
        check_tensor("x", x)
        if x.dim() < 1 or x.shape[0] == 0:
            raise ValueError(f"x must be [batch, ...] with batch >= 1, got shape {shape_str(x)}")
        if self.head is None:
            self._find_head(x)
        out, phi = self.last_layer_features(x)  # [batch], [batch, hidden]
        jac = phi.to("cpu", torch.float64)  # [batch, hidden]
        if self._bias_in_posterior:
            jac = torch.cat([jac, torch.ones(x.shape[0], 1, dtype=torch.float64)], dim=1)  # [batch, hidden + 1]
        return out, jac

    def last_layer_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(r(x), phi(x))``: the model's rewards [batch] and the input of its last Linear
        [batch, hidden], read by a forward hook on that Linear during one forward pass (eval mode,
        no grad), as laplace-torch's ``FeatureExtractor._get_hook``
        (laplace/utils/feature_extractor.py)."""
        seen = {}

        def hook(module, inputs, output):  # runs inside the head's forward: inputs[0] is phi(x)
            seen["phi"], seen["out"] = inputs[0], output

        handle = self.head.register_forward_hook(hook)
        was_training = self.model.training
        self.model.eval()  # dropout off, batch norm on its running statistics
        try:
            with torch.no_grad():
                out = self.model(x)
        finally:
            handle.remove()
            self.model.train(was_training)
        self._check_head_output(x, out, seen)
        return out.reshape(-1), seen["phi"].reshape(-1, self.head.in_features)

    def _check_head_output(self, x: torch.Tensor, out, seen: dict) -> None:
        """The model's output must be its last Linear's, one reward per item of ``x``."""
        n = x.shape[0]
        if not torch.is_tensor(out) or tuple(out.shape) not in ((n,), (n, 1)):
            got = shape_str(out) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(
                f"the reward model must map x {shape_str(x)} to rewards [{n}, 1] or [{n}] (one per item), got {got}"
            )
        if "phi" not in seen:
            raise ValueError(f"the last layer {self.last_layer_name!r} did not run in the model's forward pass")
        phi_rows = seen["phi"].numel() // self.head.in_features
        if phi_rows != n or not torch.equal(seen["out"].reshape(-1), out.reshape(-1)):
            raise ValueError(
                f"the model's output must be its last Linear {self.last_layer_name!r}'s output, one per item: "
                "something runs after the head (an activation, a rescaling), or the head saw other rows"
            )

    # ---------------------------------------------------------------- fit
    def fit(self, x_pairs, y: torch.Tensor | None = None) -> RewardLaplace:
        """Accumulate the curvature H and the summed loss over the pairs, at the model's current parameters.

        ``x_pairs`` ``[pairs, 2, ...]`` and ``y`` ``[pairs]`` (0: item 0 preferred, 1: item 1), or an iterable
        (a DataLoader) of such ``(x_pairs, y)`` batches with ``y`` left out. Starts afresh each call.
        """
        if torch.is_tensor(x_pairs):
            if y is None:
                raise TypeError("fit(x_pairs, y): y [pairs] (the preferred item, 0 or 1) is missing")
            batches: Iterable = [(x_pairs, y)]
        else:
            if y is not None:
                raise TypeError("fit(loader) takes the labels from the loader's batches; pass y only with a tensor")
            if not isinstance(x_pairs, Iterable):
                raise TypeError(f"fit needs x_pairs [pairs, 2, ...] and y, or a DataLoader; got {type(x_pairs)}")
            batches = x_pairs
        H, loss, n_data = None, torch.zeros((), dtype=torch.float64), 0
        for batch in batches:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise TypeError("each batch of the loader must be a pair (x_pairs, y)")
            xb, yb = batch
            H_b, loss_b = self._curvature(xb, yb)
            H = H_b if H is None else H + H_b
            loss = loss + loss_b
            n_data += yb.shape[0]
        if H is None:
            raise ValueError("fit got no pairs: the loader is empty")
        self.H, self.loss, self.n_data = H, loss, n_data
        self.theta_map = self._head_params()
        self._fitted_state = {name: t.clone() for name, t in self.model.state_dict().items()}
        self._fitted_items = f"{list(xb.shape[2:])} {_dtype_name(xb)}"
        return self

    def _curvature(self, x_pairs, y) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch of pairs: the GGN ``H = sum_i p_i (1 - p_i) g_i g_i^T`` [params, params] and
        the summed Bradley-Terry cross-entropy [] (laplace-torch: ``FullLaplace`` with the
        ``reward_modeling`` likelihood, ``CurvatureInterface.full`` on the last layer)."""
        pairs = _check_pairs(x_pairs, y)
        items = x_pairs.reshape(pairs * 2, *x_pairs.shape[2:])  # [2 * pairs, ...]: one forward
        what = lambda: (f"the items of x_pairs {shape_str(x_pairs)}, read as [pairs, 2, ...]: "
                        f"{pairs * 2} items of shape {list(x_pairs.shape[2:])}")
        r, jac = self._score(items, what)  # [2 * pairs], [2 * pairs, params]
        r = r.to("cpu", torch.float64).reshape(pairs, 2)  # [pairs, 2]
        jac = jac.reshape(pairs, 2, -1)  # [pairs, 2, params]
        p1 = torch.sigmoid(r[:, 1] - r[:, 0])  # [pairs]  P(item 1 preferred)
        g = jac[:, 1] - jac[:, 0]  # [pairs, params]   0 in the bias coordinate
        H = torch.einsum("n,ni,nj->ij", p1 * (1 - p1), g, g)  # [params, params]
        chosen = r.gather(1, y.to("cpu").long()[:, None])[:, 0]  # [pairs]
        nll = torch.logsumexp(r, dim=1) - chosen  # [pairs]
        return H, nll.sum()

    def _score(self, x: torch.Tensor, what) -> tuple[torch.Tensor, torch.Tensor]:
        """``rewards_and_jacobians(x)``, the model's own error (a matmul of the wrong width, a dtype)
        turned into one that names the input: ``what()`` describes it."""
        try:
            return self.rewards_and_jacobians(x)
        except RuntimeError as err:
            raise ValueError(f"the model could not score {what()} ({err})") from err

    # ---------------------------------------------------------------- prior, evidence, posterior
    def _check_fitted(self) -> None:
        """Fitted, and the model unchanged since: every method that uses the fit calls this first."""
        if self.H is None:
            raise RuntimeError("RewardLaplace is not fitted: call fit(x_pairs, y) or fit(loader) first")
        changed = self._changed_since_fit()
        if changed is not None:
            raise RuntimeError(
                f"the model changed since fit(): {changed} (trained further, loaded, or written in place, "
                "e.g. through .data or a fused optimizer); the curvature and theta_MAP belong to the old "
                "values: call fit() again"
            )

    def _changed_since_fit(self) -> str | None:
        """What differs between the model's state_dict now and fit's copy of it, or None.

        By content, exactly (``torch.equal``, NaN equal to NaN): version counters miss writes through ``.data``,
        ``vector_to_parameters`` and fused AdamW (transformers' default). Cost: a copy of the parameters and
        persistent buffers (the model's size again, on its device), read once per check.
        """
        now = self.model.state_dict()
        if now.keys() != self._fitted_state.keys():
            new, gone = sorted(now.keys() - self._fitted_state.keys()), sorted(self._fitted_state.keys() - now.keys())
            return f"its state_dict gained {new} and lost {gone}"
        for name, saved in self._fitted_state.items():
            t = now[name]
            if t.shape != saved.shape or t.dtype != saved.dtype:
                return f"{name!r} is {shape_str(t)} {t.dtype}, fit() saw {shape_str(saved)} {saved.dtype}"
            if not _same_values(t.to(saved.device), saved):
                return f"{name!r} holds other values than fit() saw"
        return None

    @property
    def prior_precision(self) -> torch.Tensor:
        """lambda, the prior precision of the head's parameters (a float64 scalar tensor); 1 until set/optimised."""
        return self._prior_precision

    @prior_precision.setter
    def prior_precision(self, value) -> None:
        self._prior_precision = self._as_precision(value).detach()

    @staticmethod
    def _as_precision(value) -> torch.Tensor:
        if torch.is_tensor(value):
            t = value.detach().to("cpu", torch.float64)
        else:  # straight to float64: a Python float through float32 would lose digits
            t = torch.as_tensor(value, dtype=torch.float64)
        if t.numel() != 1:
            raise ValueError(f"prior_precision must be one positive number (a scalar prior), got shape {shape_str(t)}")
        t = t.reshape(())
        if not bool(torch.isfinite(t)) or float(t) <= 0:
            raise ValueError(f"prior_precision must be positive and finite, got {float(t)}")
        return t

    def posterior_precision(self, prior_precision=None) -> torch.Tensor:
        """``H + lambda I`` ``[params, params]``."""
        self._check_fitted()
        lam = self._prior_precision if prior_precision is None else prior_precision
        return self.H + lam * torch.eye(self.H.shape[0], dtype=torch.float64)

    @property
    def posterior_covariance(self) -> torch.Tensor:
        """``Sigma = (H + lambda I)^-1`` ``[params, params]``."""
        return torch.cholesky_inverse(torch.linalg.cholesky(self.posterior_precision()))

    def log_marginal_likelihood(self, prior_precision=None) -> torch.Tensor:
        """Laplace's log evidence
        ``-loss - 1/2 (log det(H + lambda I) - P log lambda + lambda |theta_MAP|^2)``.

        At the current ``prior_precision``, or at the one given (a tensor with grad gives a
        differentiable value).
        """
        self._check_fitted()  # fitted, and the model unchanged since (compared by content)
        lam = self._prior_precision if prior_precision is None else prior_precision
        if torch.is_tensor(lam) and lam.requires_grad:  # differentiable: checked, not converted
            value = lam.detach()
            if lam.numel() != 1 or not bool(value.isfinite().all()) or float(value) <= 0:
                raise ValueError(
                    "prior_precision must be one positive, finite number (a scalar prior), "
                    f"got shape {shape_str(lam)} with values {value.reshape(-1)[:4].tolist()}"
                )
            lam = lam.to(torch.float64).reshape(())
        else:
            lam = self._as_precision(lam)
        P = self.H.shape[0]
        chol = torch.linalg.cholesky(self.H + lam * torch.eye(P, dtype=torch.float64))  # [P, P]
        log_det_posterior = 2 * chol.diagonal().log().sum()
        log_det_prior = P * lam.log()
        scatter = lam * (self.theta_map @ self.theta_map)
        return -self.loss - 0.5 * (log_det_posterior - log_det_prior + scatter)

    def optimize_prior_precision(
        self, *, n_steps: int = 100, lr: float = 0.1, init_prior_prec: float = 1.0
    ) -> RewardLaplace:
        """Maximise the log marginal likelihood over a scalar lambda as laplace-torch does by
        default (``ParametricLaplace.optimize_prior_precision`` in laplace/baselaplace.py, defaults
        method "marglik" and a scalar prior): Adam on log lambda, ``n_steps`` steps of learning
        rate ``lr``, from ``init_prior_prec``. Sets ``prior_precision``; returns ``self``."""
        self._check_fitted()  # fitted, and the model unchanged since (compared by content)
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        log_lam = self._as_precision(init_prior_prec).log().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([log_lam], lr=lr)
        for _ in range(n_steps):
            optimizer.zero_grad()
            (-self.log_marginal_likelihood(prior_precision=log_lam.exp())).backward()
            optimizer.step()
        self.prior_precision = log_lam.detach().exp()
        return self

    # ---------------------------------------------------------------- prediction
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean, var`` of the predictive reward of each item of ``x`` ``[batch, ...]``:
        ``r_MAP(x)`` and ``J(x) Sigma J(x)^T``, each ``[batch]``."""
        self._check_fitted()  # fitted, and the model unchanged since (compared by content)
        mean, jac = self._score(x, lambda: f"x {shape_str(x)} {_dtype_name(x)}, read as [batch, "
                                f"...]; fit() scored items {self._fitted_items}")
        var = predictive_variance(jac, self.H, self._prior_precision)  # [batch]
        return mean, var.to(mean.device, mean.dtype)

    def predictive_std(self, x: torch.Tensor) -> torch.Tensor:
        """sqrt(var) of ``__call__``, ``[batch]``."""
        return self(x)[1].sqrt()

    def __repr__(self) -> str:
        state = "not fitted" if self.H is None else f"{self.n_data} pairs, P={self.n_params}"
        return f"RewardLaplace({state}, bias={self.bias!r}, prior_precision={float(self._prior_precision):.4g})"


def _check_pairs(x_pairs, y) -> int:
    """``fit``'s checks of one batch: ``x_pairs`` [pairs, 2, ...] and ``y`` [pairs] of 0/1; returns pairs."""
    check_tensor("x_pairs", x_pairs)
    if x_pairs.dim() < 2 or x_pairs.shape[1] != 2 or x_pairs.shape[0] == 0:
        raise ValueError(
            "x_pairs must be [pairs, 2, ...] (the two items of each pair on dim 1), "
            f"got shape {shape_str(x_pairs)}"
        )
    check_integer("y", y, "indices of the preferred item (0 or 1)")
    pairs = x_pairs.shape[0]
    if tuple(y.shape) != (pairs,):
        raise ValueError(f"y must be [pairs] = [{pairs}] for x_pairs {shape_str(x_pairs)}, got {shape_str(y)}")
    if bool(((y != 0) & (y != 1)).any()):
        raise ValueError(f"y must hold 0 or 1 (the preferred item of each pair), got values {y.unique().tolist()}")
    return pairs


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")  # "float32"


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Exactly equal, a NaN equal to a NaN in the same place (torch.equal alone calls them different)."""
    if torch.equal(a, b):
        return True
    if not a.is_floating_point():
        return False
    nan = a.isnan()
    return torch.equal(nan, b.isnan()) and torch.equal(a.masked_fill(nan, 0), b.masked_fill(nan, 0))


def predictive_variance(jac: torch.Tensor, H: torch.Tensor, prior_precision) -> torch.Tensor:
    """``J Sigma J^T`` for each row of ``jac`` ``[batch, params]``, ``Sigma = (H + lambda I)^-1``:
    ``[batch]``.

    Through the Cholesky factor L of ``H + lambda I``: ``J Sigma J^T = |L^-1 J^T|^2``, no inverse
    formed. ``prior_precision`` is one positive number (a scalar prior, as everywhere in this
    module): a ``[params]`` tensor is refused rather than broadcast into a diagonal prior, and so
    is a zero or negative one."""
    check_tensor("jac", jac)
    check_tensor("H", H)
    if H.dim() != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"H must be a square [params, params] matrix, got shape {shape_str(H)}")
    if jac.dim() != 2 or jac.shape[1] != H.shape[0]:
        raise ValueError(
            f"jac must be [batch, params] = [batch, {H.shape[0]}] (one row per input, "
            f"H is {shape_str(H)}), got shape {shape_str(jac)}"
        )
    lam = RewardLaplace._as_precision(prior_precision)
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    chol = torch.linalg.cholesky(H + lam.to(H.device, H.dtype) * eye)  # [params, params]
    v = torch.linalg.solve_triangular(chol, jac.T.to(H.dtype), upper=False)  # [params, batch]
    return (v * v).sum(0)  # [batch]   |L^-1 J^T|^2 per column
