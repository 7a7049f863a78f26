"""Chapter 10 (SPIN) explorer: step through iterations, real vs generated, their log-ratios, the loss against lambda.

The numbers are ``lossbook.spin_loss`` on the log-probs stored by ``lossbook.demos.spin.snapshot`` (one per
iteration of a ``SPINTrainer`` run).
"""

from __future__ import annotations

import html

import ipywidgets as W
import torch

from ..spin import spin_loss

__all__ = ["SpinExplorer", "default_snapshots"]


def default_snapshots(iterations: int = 3, seed: int = 0) -> list[dict]:
    """Snapshots of a seconds-long SPIN run on the rhymes: a small GPT (d_model 32, one layer) pre-trained for 60
    steps on 16 windows (prompt 8, completion 16 characters), then ``iterations`` SPIN iterations of 5 steps."""
    from ..demos.spin import make_spin_data, pretrain, snapshot
    from ..spin import SPINTrainer

    data = make_spin_data(n_train=16, n_valid=4, prompt_len=8, completion_len=16, seed=seed)
    policy = pretrain(data, steps=60, seed=seed, lr=1e-2, d_model=32, n_layers=1, progress=False)
    trainer = SPINTrainer(policy, data.train_seqs, data.prompt_len, batch_size=16, steps_per_iteration=5, lam=0.1,
                          lr=3e-3, seed=seed, progress=False)
    shots: list[dict] = []
    trainer.run(iterations, callback=lambda t: shots.append(snapshot(t, tokenizer=data.tokenizer)))
    return shots


def _loss_curve_svg(h_real, h_gen, lam_now, width=320, height=120):
    lams = torch.logspace(-2, 1, 61, dtype=torch.float64)
    means = [float(spin_loss(h_real, h_gen, torch.zeros_like(h_real), torch.zeros_like(h_gen), lam=float(v))[0].mean())
             for v in lams]
    top = max(max(means), 1e-9)
    pts = " ".join(f"{i / 60 * width:.1f},{height - m / top * (height - 10):.1f}" for i, m in enumerate(means))
    x_now = (torch.log10(torch.tensor(lam_now)).item() + 2) / 3 * width
    return (f'<svg width="{width}" height="{height}" style="border:1px solid #ddd">'
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{pts}"/>'
            f'<line x1="{x_now:.1f}" x2="{x_now:.1f}" y1="0" y2="{height}" stroke="#d62728"/></svg>'
            '<div style="font-family:monospace;font-size:11px">mean loss against lambda, 0.01 .. 10 (log axis); '
            'red: the slider</div>')


class SpinExplorer(W.VBox):
    """An iteration slider, an example dropdown and a lambda slider over stored SPIN snapshots.

    For the chosen iteration and example: the prompt, the real and the generated completion, log p under the policy
    (the end of the iteration) and the reference (p_t, its start), the log-ratios h, and the per-pair loss; the mean
    loss over the snapshot's examples at the chosen lambda is ``explorer.loss`` (``spin_loss``), and
    ``explorer.current`` is the iteration's snapshot.
    """

    def __init__(self, snapshots: list[dict] | None = None, lam: float = 0.1):
        self.snapshots = snapshots if snapshots is not None else default_snapshots()
        if not self.snapshots:
            raise ValueError("snapshots must hold at least one iteration (lossbook.demos.spin.snapshot)")
        n = len(self.snapshots)
        self.iteration = W.IntSlider(value=1, min=1, max=n, description="iteration")
        self.example = W.Dropdown(options=list(range(len(self.snapshots[0]["real"]))), value=0, description="example")
        self.lam = W.FloatLogSlider(value=lam, base=10, min=-2, max=1, step=0.05, description="lambda")
        self.html = W.HTML()
        for w in (self.iteration, self.example, self.lam):
            w.observe(self._update, names="value")
        self._update()
        super().__init__([W.HBox([W.VBox([self.iteration, self.example, self.lam]), self.html])])

    @property
    def current(self) -> dict:
        return self.snapshots[self.iteration.value - 1]

    def _update(self, change=None):
        s, i, lam = self.current, self.example.value, float(self.lam.value)
        losses, r_real, r_gen = spin_loss(s["policy_real"], s["policy_generated"], s["ref_real"], s["ref_generated"],
                                          lam=lam)
        self.losses, self.loss = losses, float(losses.mean())
        h_real = s["policy_real"] - s["ref_real"]
        h_gen = s["policy_generated"] - s["ref_generated"]
        esc = html.escape
        rows = "".join(
            f"<tr><td>{name}</td><td><code>{esc(repr(text))}</code></td><td>{float(pol[i]):+.3f}</td>"
            f"<td>{float(ref[i]):+.3f}</td><td>{float(h[i]):+.3f}</td></tr>"
            for name, text, pol, ref, h in (("real", s["real"][i], s["policy_real"], s["ref_real"], h_real),
                                            ("generated", s["generated"][i], s["policy_generated"],
                                             s["ref_generated"], h_gen)))
        self.html.value = (
            f'<div style="font-family:monospace">iteration {s["iteration"]}: prompt '
            f'<code>{esc(repr(s["prompts"][i]))}</code></div>'
            '<table style="font-family:monospace;border-collapse:collapse">'
            "<tr><th></th><th>completion</th><th>log p policy</th><th>log p reference</th><th>h = log-ratio</th></tr>"
            + rows + "</table>"
            '<p style="font-family:monospace">this pair: lambda (h_real - h_gen) = '
            f"{lam * float(h_real[i] - h_gen[i]):+.4f},"
            f" loss {float(losses[i]):.4f}; mean over the {losses.numel()} pairs: "
            f'<b class="lossbook-loss">{self.loss:.4f}</b></p>'
            + _loss_curve_svg(h_real, h_gen, lam)
        )
