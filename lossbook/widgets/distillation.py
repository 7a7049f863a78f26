"""Chapter 15's explorer: a teacher with two modes, and the best one-mode student under each divergence."""

from __future__ import annotations

import ipywidgets as W
import torch

from ..distillation import LOSS_FUNCTIONS, distillation_loss, divergence_kind

__all__ = ["DistillationExplorer", "two_mode_teacher", "student_family", "best_students"]

GRID = torch.linspace(-4, 4, 41, dtype=torch.float64)  # [classes]: the outcomes, on a line
MEANS = torch.linspace(-4, 4, 81, dtype=torch.float64)
WIDTHS = torch.logspace(-0.7, 0.9, 60, dtype=torch.float64)  # 0.2 .. 7.9


def two_mode_teacher(weight_left: float = 0.6, width: float = 0.6) -> torch.Tensor:
    """[classes] teacher logits: log of a mixture of two bumps at -2 (weight ``weight_left``) and +2."""
    bump = lambda c: torch.exp(-((GRID - c) ** 2) / (2 * width**2))  # noqa: E731
    return torch.log(weight_left * bump(-2.0) + (1 - weight_left) * bump(2.0) + 1e-12)


def student_family() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every one-mode student on the grid: logits -(x - mu)^2 / (2 sigma^2), [candidates, classes], with mu, sigma."""
    mu, sigma = torch.meshgrid(MEANS, WIDTHS, indexing="ij")
    mu, sigma = mu.reshape(-1), sigma.reshape(-1)  # [candidates]
    return -((GRID[None] - mu[:, None]) ** 2) / (2 * sigma[:, None] ** 2), mu, sigma


def best_students(teacher_logits: torch.Tensor, beta: float, temperature: float) -> dict:
    """For the forward KL, the reverse KL and the JSD(beta): the candidate with the smallest divergence (an
    exhaustive search, so no optimiser's luck), its mu, sigma, logits and ``distillation_loss`` at it."""
    logits, mu, sigma = student_family()
    teacher = teacher_logits[None].expand_as(logits)  # [candidates, classes]
    ps = torch.log_softmax(logits / temperature, -1)
    pt = torch.log_softmax(teacher / temperature, -1)
    out = {}
    for name, b in (("forward KL", 0.0), ("reverse KL", 1.0), (f"JSD({beta:.2f})", beta)):
        per_candidate = LOSS_FUNCTIONS[divergence_kind(b)](ps, pt, b).sum(-1)  # [candidates]
        i = int(per_candidate.argmin())
        loss = distillation_loss(logits[i], teacher_logits, beta=b, temperature=temperature)
        out[name] = {"mu": float(mu[i]), "sigma": float(sigma[i]), "logits": logits[i], "loss": float(loss),
                     "left_mass": float(torch.softmax(logits[i] / temperature, -1)[GRID < 0].sum())}
    return out


def _svg(teacher, students, temperature, width=440, height=200):
    """Inline SVG: the tempered teacher (grey, filled) and the three students' tempered distributions."""
    colors = ["#1f77b4", "#d62728", "#2ca02c"]
    pt = torch.softmax(teacher / temperature, -1)
    ps = [torch.softmax(s["logits"] / temperature, -1) for s in students.values()]
    hi = float(max(pt.max(), *(p.max() for p in ps))) * 1.05

    def px(i, y):
        return 10 + i / (len(GRID) - 1) * (width - 20), 10 + (1 - y / hi) * (height - 30)

    parts = [f'<svg width="{width}" height="{height}" style="background:#fff;border:1px solid #ddd">']
    pts = " ".join("{:.1f},{:.1f}".format(*px(i, float(y))) for i, y in enumerate(pt))
    parts.append(f'<polygon fill="#ddd" stroke="#888" points="{px(0, 0)[0]:.1f},{px(0, 0)[1]:.1f} {pts} '
                 f'{px(len(GRID) - 1, 0)[0]:.1f},{px(0, 0)[1]:.1f}"/>')
    for p, color in zip(ps, colors):
        pts = " ".join("{:.1f},{:.1f}".format(*px(i, float(y))) for i, y in enumerate(p))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
    for k, (name, color) in enumerate(zip(students, colors)):
        parts.append(f'<text x="{width - 120}" y="{20 + 14 * k}" font-size="11" fill="{color}">{name}</text>')
    parts.append(f'<text x="10" y="{height - 6}" font-size="11">outcome x from -4 to 4; grey: the teacher at '
                 f'T = {temperature:.2f}</text></svg>')
    return "".join(parts)


class DistillationExplorer(W.VBox):
    """Move beta and the temperature T: the best one-mode student under the forward KL (covers both modes),
    the reverse KL (sits on one) and the JSD(beta) (in between), all at temperature T.

    ``explorer.students``: ``best_students``'s dict; ``explorer.loss``: the JSD(beta) student's divergence."""

    def __init__(self, beta: float = 0.5, temperature: float = 1.0, weight_left: float = 0.6):
        self.beta = W.FloatSlider(value=beta, min=0.0, max=1.0, step=0.05, description="beta")
        self.temperature = W.FloatSlider(value=temperature, min=0.5, max=4.0, step=0.25, description="T")
        self.teacher = two_mode_teacher(weight_left)
        self.html = W.HTML()
        for w in (self.beta, self.temperature):
            w.observe(self._update, names="value")
        self._update()
        super().__init__([W.HBox([self.beta, self.temperature]), self.html])

    def _update(self, change=None):
        beta, temperature = round(self.beta.value, 2), round(self.temperature.value, 2)
        self.students = best_students(self.teacher, beta, temperature)
        self.loss = self.students[f"JSD({beta:.2f})"]["loss"]
        rows = "".join(f"<tr><td>{name}</td><td>{s['mu']:+.1f}</td><td>{s['sigma']:.2f}</td>"
                       f"<td>{s['left_mass']:.3f}</td><td>{s['loss']:.4f}</td></tr>"
                       for name, s in self.students.items())
        self.html.value = (
            _svg(self.teacher, self.students, temperature)
            + "<table style='font-family:monospace'><tr><th>divergence</th><th>mu</th><th>sigma</th>"
            "<th>student mass on x &lt; 0</th><th>divergence at the best</th></tr>" + rows + "</table>"
            f"<p style='font-family:monospace'>JSD({beta:.2f}) at its best student: "
            f"<b class=\"lossbook-loss\">{self.loss:.4f}</b></p>")
