"""Which CPT regime moves the chat model? Effects, not times: for each learning rate, continual
pre-training of a run's vocabulary-expanded chat model (`01_vocab/chat_ve`) with snapshots, then
every point scored like the forgetting curve (`elchat.forgetting`): target bits/char (the gain)
and bits/char of Chat's own replies (retention), each point against Chat with a paired interval.

    .venv/bin/python benchmarks/cpt_regime.py --run runs/micro/am --lrs 1e-3,3e-3,1e-2 --steps 150 \\
        --block 128 --batch 8
    .venv/bin/python benchmarks/cpt_regime.py --run runs/smollm2-135m/am --lrs 1e-4,3e-4,1e-3 \\
        --steps 20 --block 512 --batch 8

A regime "moves the model" when, at its last point, the target BPC gain over the initialized model
is decided (paired interval below 0) and so is the loss of chat retention (reply BPC above Chat's,
paired interval above 0): then the forgetting curve has something to show and the merge something
to repair. The presets take the smallest learning rate that does both within their step budget.
Needs stages 00-01 of the run (the runner: `elchat run --preset micro --lang am --stages 00,01`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from elchat import cpt, data, runs
from elchat.evaluation import paired, stage

TASKS = ["bpc", "reply"]
CLAIMS = {"gain": ("bpc", "bpc", "init"), "forgetting": ("reply", "bpc_en", "Chat")}


def _score(path, lang, chat, out: Path, limit: int) -> dict:
    return stage.evaluate(path, lang, TASKS, limit=limit, source=chat, cache_dir=out / "replies")["tasks"]


def _row(lr, point, res, ref: dict) -> dict:
    row = {"lr": lr, "step": point["step"], "tokens": point["tokens"]}
    for claim, (task, metric, against) in CLAIMS.items():
        d = paired.difference(res[task][metric], ref[against][task][metric])
        row[f"{claim}: {task}.{metric} - {against}"] = d["value"]
        row[f"{claim} ci95"] = [round(x, 4) for x in d["ci95"]]
        row[f"{claim} decided"] = (d["ci95"][1] < 0) if claim == "gain" else (d["ci95"][0] > 0)
    row["reply eot_en"] = res["reply"]["eot_en"]["value"]
    return row


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--lang", default="am")
    ap.add_argument("--lrs", default="1e-3,3e-3")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--strategy", default="2x2ls")
    ap.add_argument("--snapshots", default="0.25,0.5")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--out", default="runs/cpt_regime")
    ap.add_argument("--save", default=None, help="CSV for the record notebook 02 prints, e.g. "
                    "benchmarks/results/cpt_regime_micro.csv (elchat.forgetting.regime_record)")
    args = ap.parse_args(argv)
    run, out = Path(args.run), Path(args.out)
    chat, chat_ve = runs.read_sources(run)["chat"], runs.stage_dir(run, "01") / "chat_ve"
    train, valid = data.train_valid(args.lang)
    ref = {"Chat": _score(chat, args.lang, chat, out, args.limit),
           "init": _score(chat_ve, args.lang, chat, out, args.limit)}
    rows = [_row(0.0, {"step": 0, "tokens": 0}, ref["init"], ref)]  # VE initialization, no CPT
    for lr in [float(x) for x in args.lrs.split(",")]:
        config = cpt.CPTConfig(strategy=args.strategy, max_steps=args.steps, lr=lr, block_size=args.block,
                               batch_size=args.batch, eval_every=0, save_every=0,
                               snapshots=tuple(float(x) for x in args.snapshots.split(",") if x))
        summary = cpt.train(chat_ve, train, valid, out / f"lr{lr:g}", config, resume=True)
        points = [{**s, "path": out / f"lr{lr:g}" / s["path"]} for s in summary["snapshots"]]
        points.append({"step": summary["steps"], "tokens": summary["tokens"], "path": out / f"lr{lr:g}"})
        for point in points:
            rows.append(_row(lr, point, _score(point["path"], args.lang, chat, out, args.limit), ref))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        table.assign(strategy=args.strategy, block=args.block, batch=args.batch, run=str(run),
                     source=runs.read_sources(run).get("notes", ""),
                     limit=args.limit).to_csv(args.save, index=False)
    return table


if __name__ == "__main__":
    main()
