"""Learned Embedding Propagation (LEP): move embeddings learned on the base model into the instruct model.

LEP (Tikhomirov & Chernyshev 2024, arXiv:2412.21140) trains new-language embeddings once, on the
BASE model after vocabulary expansion (the "donor": embedding-only continual pre-training), and
reuses them in the INSTRUCT model of the same family. Base and instruct embedding spaces differ by
roughly a linear map, so with E_b, E_i (old vocabulary, n x h) and E_d (donor, n' x h, n' >= n):

- `swap`        E_new = E_d                       (take the donor's matrices as they are);
- `overlap`     D = argmin_D ||E_b D - E_i||_F on the shared (old) tokens, E_new = E_d D;
- `conversion`  T(.) extends an old matrix to the donor vocabulary with the mean initialization
                (new row = mean of its source tokenization's rows, `elchat.embeddings`), then
                D = argmin_D ||T(E_b) D - T(E_i)||_F and E_new = E_d D   (default).

Least squares runs in float64 (`torch.linalg.lstsq`). The output matrix (lm_head) is done the same
way when the instruct model is untied. Finally the rows of the chat-template special tokens are
copied back from the instruct model (the base never learned them), and the instruct model's layers
and chat template are kept. The modes are `elchat.method.LEP_MODES`; `propagate_and_save` writes the
result as a Hugging Face directory, atomically (stage 03 and `elchat lep` both call it).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .atomic import atomic_dir
from .chat_tokens import chat_special_tokens
from .embeddings import new_token_sources
from .method import LEP_DEFAULT_MODE, LEP_MODES
from .models import load_model, load_tokenizer


def _check_mode(mode: str) -> None:
    if mode not in LEP_MODES:
        raise ValueError(f"mode={mode!r}: choose one of {', '.join(LEP_MODES)}")


def extend_mean(matrix: torch.Tensor, sources: dict[int, list[int]], rows: int) -> torch.Tensor:
    """T(E): `matrix` grown to `rows` rows, new ids filled with the mean of their source rows.

    Example: `extend_mean(E, {4: [0, 1]}, 5)[4] == E[[0, 1]].mean(0)`.
    """
    out = torch.zeros(rows, matrix.shape[1], dtype=torch.float64)
    out[:matrix.shape[0]] = matrix.double()
    for i, ids in sources.items():
        if i < rows:
            out[i] = matrix[ids].double().mean(0)
    return out


def fit_map(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """D = argmin ||source @ D - target||_F in float64.

    Example: `fit_map(E, E @ D)` recovers D when E has full column rank.
    """
    return torch.linalg.lstsq(source.double(), target.double(), driver="gelsd").solution


def propagate_matrix(e_base, e_inst, e_donor, sources: dict[int, list[int]], mode: str = LEP_DEFAULT_MODE):
    """New (donor-sized) matrix for the instruct model from base/instruct/donor matrices.

    Example: `propagate_matrix(Eb, Ei, Ed, sources, "conversion")` -> `Ed @ D` as float64.
    """
    _check_mode(mode)
    shapes = f"base {tuple(e_base.shape)}, instruct {tuple(e_inst.shape)}, donor {tuple(e_donor.shape)}"
    if not (e_base.shape[1] == e_inst.shape[1] == e_donor.shape[1]):
        raise ValueError(f"hidden sizes differ: {shapes}; LEP needs models of one family and size")
    if e_base.shape[0] != e_inst.shape[0] or e_donor.shape[0] < e_base.shape[0]:
        raise ValueError(f"the donor vocabulary must extend the base vocabulary, which must equal the "
                         f"instruct vocabulary: {shapes}")
    if mode == "swap":
        return e_donor.double().clone()
    if mode == "overlap":
        d = fit_map(e_base, e_inst)
    else:
        n = e_donor.shape[0]
        d = fit_map(extend_mean(e_base, sources, n), extend_mean(e_inst, sources, n))
    return e_donor.double() @ d


def _load(spec):
    """A (model, tokenizer) pair from a directory or an existing pair."""
    if isinstance(spec, (tuple, list)):
        return spec
    return load_model(spec, device="cpu", dtype="float32"), load_tokenizer(spec)


def _donor_sources(base_tok, instruct_tok, donor_tok, families) -> dict[int, list[int]]:
    """The donor's new token ids -> their pieces in the base vocabulary, after checking the three fit."""
    if len(set(families)) != 1:
        raise ValueError(f"model families differ: base {families[0]}, instruct {families[1]}, "
                         f"donor {families[2]}")
    if base_tok.get_vocab() != instruct_tok.get_vocab():
        raise ValueError(f"base and instruct vocabularies differ ({len(base_tok)} vs {len(instruct_tok)} tokens)")
    try:
        return new_token_sources(base_tok, donor_tok)
    except ValueError as e:
        raise ValueError(f"donor tokenizer ({len(donor_tok)} tokens) does not extend the base tokenizer "
                         f"({len(base_tok)} tokens): {e}") from None


def _embedding_layers(model, tied: bool) -> list:
    """The input embedding, plus the output embedding when it is a separate matrix."""
    return [model.get_input_embeddings()] + ([] if tied else [model.get_output_embeddings()])


def propagate_embeddings(base, instruct, donor, mode: str = LEP_DEFAULT_MODE, special_tokens=None):
    """Instruct model with donor-vocabulary embeddings propagated by LEP; returns (model, tokenizer).

    `base`, `instruct`, `donor`: HF directories or (model, tokenizer) pairs; the donor is the base
    after vocabulary expansion + embedding training. `special_tokens`: rows copied back from the
    instruct model (default: `elchat.chat_tokens.chat_special_tokens(instruct tokenizer)`).
    Example: `model, tok = propagate_embeddings("base", "chat", "02_cpt/base_emb")`.
    """
    _check_mode(mode)
    (base_model, base_tok), (instruct_model, instruct_tok), (donor_model, donor_tok) = \
        _load(base), _load(instruct), _load(donor)
    families = tuple(m.config.model_type for m in (base_model, instruct_model, donor_model))
    sources = _donor_sources(base_tok, instruct_tok, donor_tok, families)
    tied = instruct_model.get_output_embeddings().weight is instruct_model.get_input_embeddings().weight
    triples = zip(*(_embedding_layers(m, tied) for m in (base_model, instruct_model, donor_model)))
    new = [propagate_matrix(b.weight.detach(), i.weight.detach(), d.weight.detach(), sources, mode)
           for b, i, d in triples]
    old = [layer.weight.detach().clone() for layer in _embedding_layers(instruct_model, tied)]
    instruct_model.resize_token_embeddings(new[0].shape[0], mean_resizing=False)
    special = instruct_tok.convert_tokens_to_ids(list(special_tokens or chat_special_tokens(instruct_tok)))
    with torch.no_grad():
        for layer, value, old_weight in zip(_embedding_layers(instruct_model, tied), new, old):
            layer.weight.copy_(value.to(layer.weight.dtype))
            layer.weight[special] = old_weight[special]  # the base never learned the chat-template rows
    instruct_model.config.vocab_size = new[0].shape[0]
    donor_tok.chat_template = instruct_tok.chat_template
    return instruct_model, donor_tok


def propagate_and_save(base, instruct, donor, out_dir, mode: str = LEP_DEFAULT_MODE) -> Path:
    """`propagate_embeddings`, saved to `out_dir` as a Hugging Face directory (written atomically).

    Example: `propagate_and_save(base, chat, run / "02_cpt/base_emb", run / "03_merge/lep")`.
    """
    model, tok = propagate_embeddings(base, instruct, donor, mode=mode)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return Path(out_dir)


def _cmd(args) -> int:
    for name in ("base", "instruct", "donor"):
        if not Path(getattr(args, name)).is_dir():
            raise FileNotFoundError(f"--{name} {getattr(args, name)}: not a model directory")
    out = propagate_and_save(args.base, args.instruct, args.donor, args.out, mode=args.mode)
    rows = json.loads((out / "config.json").read_text())["vocab_size"]
    print(f"LEP ({args.mode}): wrote {out} ({rows} embedding rows)")
    return 0


def register_cli(subparsers) -> None:
    """`elchat lep --base B --instruct C --donor D --out DIR` (see --help)."""
    p = subparsers.add_parser("lep", help="Learned Embedding Propagation into an instruct model",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--base", required=True, help="base model directory (before vocabulary expansion)")
    p.add_argument("--instruct", required=True, help="instruct/chat model directory of the same family")
    p.add_argument("--donor", required=True, help="base after vocabulary expansion + embedding training")
    p.add_argument("--mode", default=LEP_DEFAULT_MODE, choices=LEP_MODES)
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.set_defaults(func=_cmd)
