"""Tiny models for the chapters' training demos."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_integer, check_rank, shape_str

__all__ = ["MLP", "TinyTransformer", "generate"]


class MLP(nn.Module):
    """in_dim -> hidden -> ... -> out_dim, GELU between layers; returns logits."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, depth: int = 2):
        super().__init__()
        dims = [in_dim] + [hidden] * depth
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.GELU()]
        layers.append(nn.Linear(dims[-1], out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x):  # [..., in_dim] -> [..., out_dim]
        return self.net(x)


class _Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, d_model: int, n_heads: int, causal: bool, dropout: float):
        super().__init__()
        self.n_heads, self.causal = n_heads, causal
        self.drop = nn.Dropout(dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x, attention_mask=None):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        mask = None if attention_mask is None else attention_mask[:, None, None, :]  # [B, 1, 1, T]: keys kept
        if self.causal and mask is not None:
            mask = mask & torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal and mask is None)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.mlp(self.norm2(x)))


class TinyTransformer(nn.Module):
    """A small transformer over token ids: Long[Tensor, "batch seq"] -> logits Float[Tensor, "batch seq vocab"].

    ``causal=True`` is a GPT (each position sees itself and the past: the causal LM of chapter 02);
    ``causal=False`` is a BERT-style encoder (every position sees every position: the masked LM of chapter 03).
    ``attention_mask`` (Bool or 0/1 [batch, seq], 1 = a real token) hides padding from the attention.
    ``dropout`` applies to the residual branches (the shipped texts are small: it fights over-fitting).
    """

    def __init__(self, vocab_size: int, d_model: int = 64, n_heads: int = 4, n_layers: int = 2,
                 max_len: int = 128, causal: bool = True, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        self.vocab_size, self.max_len, self.causal = vocab_size, max_len, causal
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, causal, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, input_ids, attention_mask=None):
        check_integer("input_ids", input_ids, "token ids")
        check_rank("input_ids", input_ids, (2,), "[batch, seq]")
        if input_ids.shape[1] > self.max_len:
            raise ValueError(f"input_ids has {input_ids.shape[1]} positions (shape {shape_str(input_ids)}), "
                             f"more than max_len={self.max_len}")
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask must have the shape of input_ids {shape_str(input_ids)}, "
                                 f"got {shape_str(attention_mask)}")
            attention_mask = attention_mask.bool()
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.tok(input_ids) + self.pos(positions)
        for block in self.blocks:
            x = block(x, attention_mask)
        return self.head(self.norm(x))


@torch.no_grad()
def generate(model: TinyTransformer, prompt_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample ``max_new_tokens`` after ``prompt_ids`` (1-D) from a causal model; returns prompt + new tokens.

    ``temperature=0`` is greedy decoding. Sampling runs on the CPU generator given, so it is reproducible.
    """
    if not model.causal:
        raise ValueError("generate needs a causal model (TinyTransformer(causal=True))")
    check_integer("prompt_ids", prompt_ids, "token ids")
    check_rank("prompt_ids", prompt_ids, (1,), "1-D [tokens]")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = prompt_ids.to(device)
    for _ in range(max_new_tokens):
        logits = model(ids[-model.max_len :][None])[0, -1].float().cpu()
        if temperature == 0:
            nxt = logits.argmax()
        else:
            nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator)[0]
        ids = torch.cat([ids, nxt.to(device).view(1)])
    model.train(was_training)
    return ids.cpu()
