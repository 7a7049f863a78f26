"""Chapter 08's explorer: move a test input from the training data to far away and watch the predictive reward's
mean and its +-2 sigma band; a slider sets the prior precision lambda."""

from __future__ import annotations

import html

import ipywidgets as W
import torch

__all__ = ["UncertaintyExplorer"]


class UncertaintyExplorer(W.VBox):
    """``UncertaintyExplorer(la)`` for a fitted ``lossbook.RewardLaplace`` on 2-D inputs.

    The test input is ``x = distance * direction`` (``direction`` a unit vector, 0 is the centre of the training
    inputs). The plot shows the predictive mean and mean +- 2 std along the whole ray, the true reward if
    ``truth`` (a function ``[n, dim] -> [n]``) is given, and a marker at the slider's distance. Moving the lambda
    slider recomputes everything with that prior precision (``la``'s own is restored afterwards).
    ``explorer.mean``, ``explorer.std``, ``explorer.prior_precision`` and ``explorer.x`` are the numbers shown,
    computed by ``la``.
    """

    def __init__(self, la, *, direction=(1.0, 0.0), truth=None, max_distance: float = 8.0, distance: float = 0.0,
                 train_radius: float | None = 2.0):
        self.la, self.truth, self.train_radius = la, truth, train_radius
        d = torch.as_tensor(direction, dtype=torch.float64)
        self.direction = d / d.norm()
        lam = float(la.prior_precision)
        wide = {"description_width": "initial"}
        self.distance = W.FloatSlider(value=distance, min=0.0, max=max_distance, step=0.25, description="distance",
                                      style=wide)
        self.log_lambda = W.FloatSlider(value=round(torch.tensor(lam).log10().item(), 2), min=-2.0, max=3.0,
                                        step=0.1, description="log10 lambda", style=wide)
        self.max_distance = max_distance
        self.html = W.HTML()
        for w in (self.distance, self.log_lambda):
            w.observe(self._update, names="value")
        self._update()
        super().__init__([W.VBox([self.distance, self.log_lambda]), self.html])

    def predict(self, distances: torch.Tensor, prior_precision: float):
        """mean, std ``[n]`` (float64) at ``distances * direction`` under prior precision ``prior_precision``."""
        dtype = next(self.la.model.parameters()).dtype
        x = distances[:, None] * self.direction[None, :]  # [n, dim]
        saved = self.la.prior_precision
        try:
            self.la.prior_precision = prior_precision
            mean, var = self.la(x.to(dtype))
        finally:
            self.la.prior_precision = saved
        return mean.double(), var.double().sqrt(), x

    def _update(self, change=None):
        self.prior_precision = float(10.0**self.log_lambda.value)
        grid = torch.linspace(0.0, self.max_distance, 65, dtype=torch.float64)
        self.grid_mean, self.grid_std, grid_x = self.predict(grid, self.prior_precision)
        mean, std, x = self.predict(torch.tensor([self.distance.value], dtype=torch.float64), self.prior_precision)
        self.mean, self.std, self.x = float(mean[0]), float(std[0]), x[0].tolist()
        self.grid_truth = None if self.truth is None else self.truth(grid_x).double()
        self.html.value = self._render(grid)

    def _render(self, grid):
        w, h, pad = 420, 220, 30
        extra = [self.grid_truth] if self.grid_truth is not None else []
        lo = torch.cat([self.grid_mean - 2 * self.grid_std, *extra])
        hi = torch.cat([self.grid_mean + 2 * self.grid_std, *extra])
        y0, y1 = float(lo.min()), float(hi.max())
        y1 = y1 if y1 > y0 else y0 + 1.0

        def sx(t):
            return pad + (w - 2 * pad) * t / self.max_distance

        def sy(v):
            return h - pad - (h - 2 * pad) * (v - y0) / (y1 - y0)

        def path(values):
            return " ".join(f"{sx(float(t)):.1f},{sy(float(v)):.1f}" for t, v in zip(grid, values))

        upper = [(float(t), float(v)) for t, v in zip(grid, self.grid_mean + 2 * self.grid_std)]
        lower = [(float(t), float(v)) for t, v in zip(grid, self.grid_mean - 2 * self.grid_std)]
        band = " ".join(f"{sx(t):.1f},{sy(v):.1f}" for t, v in upper + lower[::-1])
        parts = [
            f'<svg width="{w}" height="{h}" style="background:#fff">',
            f'<polygon points="{band}" fill="#9ecae1" fill-opacity="0.5"/>',
            f'<polyline points="{path(self.grid_mean)}" fill="none" stroke="#08519c" stroke-width="2"/>',
        ]
        if self.grid_truth is not None:
            parts.append(f'<polyline points="{path(self.grid_truth)}" fill="none" stroke="#a50f15" '
                         'stroke-dasharray="4,3" stroke-width="1.5"/>')
        if self.train_radius is not None:
            parts.append(f'<rect x="{sx(0):.1f}" y="{pad}" width="{sx(self.train_radius) - sx(0):.1f}" '
                         f'height="{h - 2 * pad}" fill="#31a354" fill-opacity="0.08"/>')
        t = self.distance.value
        parts += [
            f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{pad}" y2="{h - pad}" stroke="#444" stroke-dasharray="2,2"/>',
            f'<circle cx="{sx(t):.1f}" cy="{sy(self.mean):.1f}" r="4" fill="#08519c"/>',
            f'<text x="{pad}" y="{h - 8}" font-size="11">distance 0</text>',
            f'<text x="{w - pad - 60}" y="{h - 8}" font-size="11">{self.max_distance:g}</text>',
            f'<text x="{pad}" y="14" font-size="11">reward: mean (blue), +-2 std (band)'
            + (", true (red dashes)" if self.grid_truth is not None else "") + "</text>",
            (f'<text x="{pad}" y="26" font-size="11">shaded: where most training inputs lie</text>'
             if self.train_radius is not None else ""),
            "</svg>",
        ]
        x = ", ".join(f"{v:+.2f}" for v in self.x)
        table = (
            "<table style='font-family:monospace;border-spacing:10px 2px'>"
            f"<tr><td>x</td><td>({html.escape(x)})</td></tr>"
            f"<tr><td>lambda</td><td>{self.prior_precision:.4g}</td></tr>"
            f"<tr><td>mean</td><td>{self.mean:+.4f}</td></tr>"
            f"<tr><td>std</td><td>{self.std:.4f}</td></tr>"
            f"<tr><td>mean - 2 std</td><td>{self.mean - 2 * self.std:+.4f}</td></tr>"
            "</table>"
        )
        return "<div style='display:flex;gap:16px;align-items:center'>" + "".join(parts) + table + "</div>"
