"""Does bf16 change what CPT learns? A run's stage-02 chat CPT (bf16 autocast where the CPU or GPU
has native bf16) against the same training in fp32: same model, data order, steps and learning
rate; only the precision differs.

    .venv/bin/python benchmarks/cpt_precision.py --run runs/smollm2-135m/am

Prints, for the two final models, the validation bits per character
- as each run's own validation reported it (bf16 autocast vs fp32: training *and* evaluation
  precision differ), and
- both scored in fp32 on the same validation documents (only the training precision differs),
- and the bf16-trained model scored under bf16 autocast vs fp32 (only the evaluation precision),
each as a relative difference, plus the training speed (tokens/s of the two runs, which ran one
after the other, so the ratio is only meaningful on a quiet machine). The kit's target: bf16
changes validation BPC by less than 1% relative.

Needs stages 00-02 of the run; reuses its bf16 CPT (`02_cpt/chat_cpt`) and trains the fp32 twin
under `--out`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from elchat import cpt, data, runs
from elchat.evaluation.bpc import bits_per_char
from elchat.evaluation.generate import load


def _valid_bpc(model_dir: Path, docs: list[str], block: int, batch: int, precisions=("fp32",)) -> dict:
    """{precision: BPC} of one model, loaded once ("bf16": under bf16 autocast)."""
    model, tok = load(model_dir, "cpu")
    scores = {}
    for name in precisions:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
            scores[name] = bits_per_char(model, tok, docs, max_length=block, batch_size=batch)["bpc"]
    return scores


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a run directory with stages 00-02, e.g. runs/smollm2-135m/am")
    ap.add_argument("--lang", default="am")
    ap.add_argument("--out", default="runs/cpt_precision")
    args = ap.parse_args(argv)
    run, out = Path(args.run), Path(args.out)
    bf16_dir = runs.stage_dir(run, "02") / "chat_cpt"
    summary = json.loads(runs.require(bf16_dir / "cpt_summary.json", "02").read_text())
    if summary["precision"] != "bf16":
        raise SystemExit(f"{bf16_dir} trained in precision {summary['precision']!r}, not bf16: this "
                         "machine has no native bf16, so there is nothing to compare")
    fields = cpt.CPTConfig.__dataclass_fields__
    config = cpt.CPTConfig(**{**{k: v for k, v in summary["config"].items() if k in fields},
                              "dtype": "fp32", "snapshots": (), "save_every": 0})
    train, valid = data.train_valid(args.lang)
    fp32 = cpt.train(runs.stage_dir(run, "01") / "chat_ve", train, valid, out / "fp32", config, resume=True)
    docs = cpt.validation_docs(valid, config.eval_max_docs)
    block, batch = config.block_size, config.batch_size
    bf16_trained = _valid_bpc(bf16_dir, docs, block, batch, ("fp32", "bf16"))
    scored = {"bf16-trained, fp32 eval": bf16_trained["fp32"],
              "bf16-trained, bf16 eval": bf16_trained["bf16"],
              "fp32-trained, fp32 eval": _valid_bpc(out / "fp32", docs, block, batch)["fp32"]}
    rel = {
        "own validation (bf16 run vs fp32 run)": summary["final_valid_bpc"] / fp32["final_valid_bpc"] - 1,
        "training precision (both scored in fp32)":
            scored["bf16-trained, fp32 eval"] / scored["fp32-trained, fp32 eval"] - 1,
        "evaluation precision (bf16-trained model)":
            scored["bf16-trained, bf16 eval"] / scored["bf16-trained, fp32 eval"] - 1,
    }
    print(f"{len(docs)} validation documents, {config.max_steps} steps of {batch} x {block}, lr {config.lr:g}")
    print(f"own validation BPC: bf16 run {summary['final_valid_bpc']:.4f}, fp32 run {fp32['final_valid_bpc']:.4f}")
    for name, value in scored.items():
        print(f"{name:26s} BPC {value:.4f}")
    for name, value in rel.items():
        print(f"{name:45s} {100 * value:+.2f}%  ({'<' if abs(value) < 0.01 else '>='} 1%)")
    speed = summary["train_tokens_per_s"] / fp32["train_tokens_per_s"]
    print(f"training tokens/s: bf16 {summary['train_tokens_per_s']}, fp32 {fp32['train_tokens_per_s']} "
          f"({speed:.2f}x, sequential runs)")
    return {"bpc": scored, "relative": rel, "speedup": speed}


if __name__ == "__main__":
    main()
