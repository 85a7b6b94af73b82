"""The published settings of the three methods, defined once (every module and notebook reads them).

ElChat (Yamaguchi, Morishita, Villavicencio & Aletras, 2025, arXiv 2412.11704):
- continual pre-training trains the **transition layers** (the first two and the last two
  transformer layers, `TRANSITION_LAYERS`) plus the input embeddings, the LM head and the final
  norm ("2x2LS": 2 + 2 layers, layer-wise selection); the middle of the network stays frozen;
- the merge SLERPs each transition layer of the adapted chat model A towards the source chat model
  C with weight `t`, the **weight of C**: t = 0 keeps A, t = 1 gives C. The published `ELCHAT_T`
  is 0.3, 0.5, 0.5, 0.3 for layers 0, 1, -2, -1. The authors' released merge script
  (github.com/gucci-j/chat-cve, `merging/src/methods/add_transition.py`) starts from C and
  interpolates only the `.weight` tensors of those layers: every tensor outside the transition
  layers and the vocabulary matrices (the final norm; the middle layers, equal in A and C after
  2x2LS) stays C's (`ELCHAT_OTHER_T` = 1), and so do the q/k/v biases of Qwen2-family attention
  (`ELCHAT_INTERPOLATE_BIASES` = False).

Vocabulary expansion initializes each new token's embedding row by one of `INIT_METHODS`
(`elchat.embeddings`): the mean of its source sub-token rows (ElChat's default), the mean of the two
pieces its merge joins, random, or LEP's weighted mean.

Chat Vector (Huang et al., 2024): adapted base + r * (chat - base), r = `CV_RATIO`.

LEP (Tikhomirov & Chernyshev, 2024): embeddings learned on the base model are propagated into the
instruct model by one of `LEP_MODES` (see `elchat.lep`).

Layer indices are Python-style: negative ones count from the top (-1 is the last layer).
"""
from __future__ import annotations

TRANSITION_LAYERS = (0, 1, -2, -1)    # ElChat's 2x2LS: first two and last two layers
ELCHAT_T = (0.3, 0.5, 0.5, 0.3)       # SLERP t (weight of the source chat model C) per layer above
ELCHAT_OTHER_T = 1.0                  # t of every tensor outside those layers and the vocabulary: C's
ELCHAT_INTERPOLATE_BIASES = False     # transition-layer biases stay C's (released code: .weight only)
CV_RATIO = 1.0                        # Chat Vector: adapted base + ratio * (chat - base)

CPT_STRATEGIES = ("2x2ls", "embeddings", "full", "lora")
CPT_LR = {"embeddings": 1e-4}         # peak learning rates; every other strategy: CPT_DEFAULT_LR
CPT_DEFAULT_LR = 5e-5                 # ElChat's CPT learning rate

INIT_METHODS = ("mean", "merge", "random", "wmean")  # new-row initializations (elchat.embeddings)

LEP_MODES = ("swap", "overlap", "conversion")
LEP_DEFAULT_MODE = "conversion"


def default_lr(strategy: str) -> float:
    """The published peak learning rate of a CPT strategy. Example: `default_lr("2x2ls") == 5e-5`."""
    return CPT_LR.get(strategy, CPT_DEFAULT_LR)


def resolve_layers(layers, num_layers: int) -> list[int]:
    """Layer indices made non-negative and sorted; a clear error when one is out of range.

    Example: `resolve_layers((0, 1, -2, -1), 30) == [0, 1, 28, 29]`.
    """
    bad = [i for i in layers if isinstance(i, bool) or not isinstance(i, int)
           or not -num_layers <= i < num_layers]
    if bad:
        raise ValueError(f"layers={tuple(layers)}: {bad[0]!r} is not a layer index of a "
                         f"{num_layers}-layer model (valid: {-num_layers} .. {num_layers - 1})")
    resolved = [i % num_layers for i in layers]
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"layers={tuple(layers)}: a layer is listed twice")
    return sorted(resolved)


def check_t(name: str, value) -> list[float]:
    """Every t of `value` (a number or a list) checked to lie in [0, 1]; returned as floats.

    Example: `check_t("t", [0.3, 0.5]) == [0.3, 0.5]`.
    """
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"{name}={value!r}: every t must be a number in [0, 1] "
                             "(the weight of the source chat model)")
    return [float(v) for v in values]
