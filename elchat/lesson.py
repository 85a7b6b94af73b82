"""The lesson's toy examples and baselines: each method on tiny tensors, through the kit's own functions.

The notebooks show every method on a toy before applying it to the models; the toys live here so
that tests can check them against values computed by hand (`tests/test_lesson.py`):

- `slerp_arc(a, c, ts)`: SLERP of two vectors, `merge_math.slerp(t; a, c)` for each t. t is the
  weight of the SOURCE chat model C: t = 0 gives A (the adapted chat model, Chat+VE), t = 1 gives
  C (Chat). For two unit vectors every point stays on the unit circle, where lerp cuts the chord
  (its midpoint has norm cos(θ/2));
- `toy_mean_init()`: one new token's row = mean of its source pieces' rows (`embeddings.new_rows`);
- `toy_chat_vector()`: T + r·(C − B) on one small matrix (`merge_math.chat_vector`);
- `toy_lep()`: a base/instruct embedding pair related by a known linear map D; LEP's least squares
  (`lep.fit_map`) recovers D and `lep.propagate_matrix` carries the donor's new rows through it;
- `trainable_table(model, layers)`: what `2x2ls` trains on the model at hand (`cpt.apply_strategy`),
  by part, with its share of the parameters.

Baselines for the figures: `uniform_bpc(V, tokens/char) = log2(V) · tokens/char` is the bits per
character of a model that puts probability 1/V on every token (a model worse than that has learned
nothing usable about the text); `MC_CHANCE` is 1 / the number of choices of the multiple-choice task.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import torch

from .cpt import CPTConfig, apply_strategy, validation_docs
from .embeddings import new_rows
from .lep import fit_map, propagate_matrix
from .evaluation.bpc import bits_per_char
from .merge_math import chat_vector, lerp, slerp
from .models import load_model, load_tokenizer

MC_CHANCE = 0.25  # the translation multiple choice has 4 options (elchat.evaluation.mc)


def uniform_bpc(vocab_size: int, tokens_per_char: float) -> float:
    """Bits/char of a uniform guess over the vocabulary. Example: `uniform_bpc(256, 0.5) == 4.0`."""
    return math.log2(vocab_size) * tokens_per_char


def tokens_per_char(tokenizer, texts) -> float:
    """Tokens per character of `texts` (no special tokens). Example: `tokens_per_char(tok, ["ab"])`."""
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return tokens / max(1, sum(map(len, texts)))


def slerp_arc(a: torch.Tensor, c: torch.Tensor, ts) -> torch.Tensor:
    """Rows slerp(t; a, c) for each t (t = weight of c). Example: `slerp_arc(a, c, [0, 1])[1] == c`."""
    return torch.stack([slerp(float(t), a, c) for t in ts])


def draw_slerp_arc(ax, a: torch.Tensor, c: torch.Tensor, n: int = 11):
    """Draw the SLERP arc from A (t=0) to C (t=1) and lerp's chord, with both ends labelled."""
    ts = torch.linspace(0, 1, n)
    arc = slerp_arc(a, c, ts)
    chord = torch.stack([lerp(float(t), a, c) for t in ts])
    ax.plot(chord[:, 0], chord[:, 1], "--", color="grey", label="lerp (straight line)")
    ax.plot(arc[:, 0], arc[:, 1], "o-", color="tab:blue", markersize=3, label="slerp")
    for v, text in ((a, "t = 0: A (Chat+VE)"), (c, "t = 1: C (source Chat)")):
        ax.annotate("", xy=(float(v[0]), float(v[1])), xytext=(0, 0), arrowprops={"arrowstyle": "->"})
        ax.annotate(text, (float(v[0]), float(v[1])), xytext=(4, 6), textcoords="offset points", fontsize=8)
    mid = slerp(0.5, a, c)
    ax.plot([float(mid[0])], [float(mid[1])], "o", color="tab:orange", label="t = 0.5")
    points = torch.cat([arc, torch.zeros(1, 2)])
    ax.set_xlim(float(points[:, 0].min()) - 0.3, float(points[:, 0].max()) + 0.6)
    ax.set_ylim(float(points[:, 1].min()) - 0.3, float(points[:, 1].max()) + 0.3)
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="lower left")
    return arc


def toy_mean_init() -> tuple[torch.Tensor, dict, torch.Tensor]:
    """A 4-token embedding, a new token id 4 made of pieces [1, 3], and its mean-initialized row."""
    emb = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [2.0, -2.0]])
    sources = {4: [1, 3]}
    return emb, sources, new_rows(emb, sources, "mean")[0]


def toy_chat_vector(ratio: float = 1.0) -> dict[str, torch.Tensor]:
    """Base B, chat C, adapted base T (2x2 each) and CV = T + ratio·(C − B)."""
    base = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    chat = torch.tensor([[1.0, 0.5], [0.0, 1.5]])      # chat tuning moved two entries
    adapted = torch.tensor([[2.0, 0.0], [0.0, 1.0]])   # CPT moved another one
    return {"B": base, "C": chat, "T": adapted, "CV": chat_vector(adapted, [chat], [base], [ratio])}


def toy_lep(n: int = 12, h: int = 3, new: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Base rows E_b (n x h), a known map D, instruct rows E_i = E_b D, a donor with `new` new rows.

    Returns E_b, D, E_i, the donor E_d, D fitted by `fit_map` and the propagated matrix (`overlap`).
    """
    g = torch.Generator().manual_seed(seed)
    e_base = torch.randn(n, h, generator=g, dtype=torch.float64)
    d = torch.randn(h, h, generator=g, dtype=torch.float64)
    e_donor = torch.cat([e_base, torch.randn(new, h, generator=g, dtype=torch.float64)])
    e_inst = e_base @ d
    sources = {n + i: [i] for i in range(new)}
    return {"E_b": e_base, "D": d, "E_i": e_inst, "E_d": e_donor, "D_fit": fit_map(e_base, e_inst),
            "E_new": propagate_matrix(e_base, e_inst, e_donor, sources, "overlap")}


def _part(name: str, num_layers: int) -> str:
    parts = name.split(".")
    for i, p in enumerate(parts[:-1]):
        if p.isdigit() and parts[i - 1] in ("layers", "h", "blocks"):
            return f"layer {int(p)} of {num_layers}"
    return name.removesuffix(".weight")


def trainable_table(model, layers) -> pd.DataFrame:
    """Per part of `model` (embeddings, each layer, final norm, lm_head): parameters and whether
    `2x2ls` with `layers` trains them. Freezes `model` as CPT would (use a throw-away copy).

    Example: `trainable_table(model, [0, -1])` -> columns part, parameters, trained, share.
    """
    apply_strategy(model, CPTConfig(strategy="2x2ls", layers=tuple(layers)))
    num_layers = model.config.num_hidden_layers
    rows, seen = {}, set()
    for name, p in model.named_parameters():
        if id(p) in seen:  # tied input/output embeddings count once
            continue
        seen.add(id(p))
        part = _part(name, num_layers)
        row = rows.setdefault(part, {"part": part, "parameters": 0, "trained": p.requires_grad})
        row["parameters"] += p.numel()
    table = pd.DataFrame(list(rows.values()))
    table["share"] = table["parameters"] / table["parameters"].sum()
    return table


def attribution(source_dir, cpt_dir, valid_texts, device: str = "cpu") -> pd.DataFrame:
    """Target bits/char of the source chat model, of Chat+VE before training and after CPT, on the
    validation documents CPT scored, each with its tokenizer's uniform-guess baseline.

    Before/after CPT come from `cpt_dir/log.csv` (its first and last `valid_bpc`); the source model is
    scored here the same way (`bits_per_char` over the same non-empty documents, cut to the run's
    `eval_max_docs`, in windows of its `block_size`, all read from `cpt_dir/cpt_summary.json`), and
    in the precision CPT validated in (bf16 autocast when it trained in bf16: the three bars then
    differ by the model alone; bf16 moves a BPC by ~1-2% on these models).
    Example: `attribution(chat, run / "02_cpt" / "chat_cpt", valid_texts)["bpc"]`.
    """
    summary = json.loads((Path(cpt_dir) / "cpt_summary.json").read_text(encoding="utf-8"))
    config = summary["config"]
    docs = validation_docs(valid_texts, config["eval_max_docs"])
    log = pd.read_csv(Path(cpt_dir) / "log.csv").dropna(subset=["valid_bpc"])
    expanded_tok, source_tok = load_tokenizer(cpt_dir), load_tokenizer(source_dir)
    source = load_model(source_dir, device=device).eval()
    autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(summary.get("precision"))
    kind = next(source.parameters()).device.type
    with torch.no_grad(), torch.autocast(kind, dtype=autocast, enabled=autocast is not None):
        source_bpc = bits_per_char(source, source_tok, docs, max_length=config["block_size"],
                                   batch_size=config["batch_size"])["bpc"]
    rows = [("source Chat", source_bpc, source_tok),
            ("Chat+VE, init only" if log["step"].iloc[0] == 0 else "Chat+VE, first evaluation",
             float(log["valid_bpc"].iloc[0]), expanded_tok),
            (f"Chat+VE after CPT (step {int(log['step'].iloc[-1])})", float(log["valid_bpc"].iloc[-1]),
             expanded_tok)]
    return pd.DataFrame([{"model": name, "bpc": bpc, "vocabulary": len(tok), "n_docs": len(docs),
                          "tokens_per_char": tokens_per_char(tok, docs),
                          "uniform_bpc": uniform_bpc(len(tok), tokens_per_char(tok, docs))}
                         for name, bpc, tok in rows])


def draw_attribution(ax, frame: pd.DataFrame):
    """Bars of `attribution`'s BPC with each model's uniform-guess baseline as a tick above/below it."""
    x = range(len(frame))
    ax.bar(x, frame["bpc"], color=["grey", "tab:orange", "tab:blue"][:len(frame)])
    ax.scatter(x, frame["uniform_bpc"], marker="_", s=900, color="red", zorder=3,
               label="uniform guess over the vocabulary: log2(V) x tokens/char")
    ax.axhline(frame["bpc"].iloc[0], color="grey", ls=":", lw=1, label="source Chat")
    for i, v in enumerate(frame["bpc"]):
        ax.text(i, v, f"{v:.2f}", ha="center", va="bottom")
    ax.set_xticks(list(x), frame["model"], fontsize=8)
    ax.set(ylabel="target bits per character (lower is better)",
           title=f"What each step buys (n = {frame['n_docs'].iloc[0]} validation documents)")
    ax.legend(fontsize=7)
