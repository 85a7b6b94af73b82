"""The `elchat` command line: one sub-command per stage, each defined next to its logic.

Every module that offers a command defines `register_cli(subparsers)`, which adds its parser and
sets `func` (called with the parsed namespace; its return value is the exit code). This file only
collects them, so a stage's options live with the stage's code — and applies the one rule for
model arguments: every argument that names a model (`MODEL_ARGS`) goes through
`elchat.models.resolve_model_dir` before the command runs, so each command accepts a preset name
(`--model smollm2-135m`), a model directory or a hub id alike, and refuses a directory without
tokenizer files, with non-safetensors weights or with weights that do not cover its architecture
before any work.
"""
from __future__ import annotations

import argparse
import sys

from . import cpt, data, lep, merge, models, report, runner, vocab
from .evaluation import stage as evaluation_stage
from .errors import UserError

# command -> {argument that names a model: whether the command reads its tokenizer}
MODEL_ARGS = {
    "vocab": {"model": True},
    "cpt": {"model": True},
    "lep": {"base": True, "instruct": True, "donor": True},
    "merge": {"model_a": False, "model_b": False, "base": False, "chat": True, "target": True,
              "adapted": True},
    "eval": {"model": True, "reference": True},
}

# Each module's register_cli adds its sub-command, in this order in `elchat --help`.
_COMMANDS = [
    models,      # elchat models list|fetch
    data,        # elchat data list|build
    vocab,       # elchat vocab expand
    lep,         # elchat lep
    cpt,         # elchat cpt
    merge,       # elchat merge slerp|chat-vector|elchat
    evaluation_stage,  # elchat eval
    runner,      # elchat run
    report,      # elchat report
]


def build_parser() -> argparse.ArgumentParser:
    """The `elchat` parser with every stage's sub-command. Example: `build_parser().parse_args(["run"])`."""
    parser = argparse.ArgumentParser(prog="elchat", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMANDS:
        module.register_cli(sub)
    return parser


def resolve_model_args(args) -> None:
    """Replace every model argument of the parsed command (`MODEL_ARGS`) by its checked directory.

    Example: `cpt --model smollm2-135m` -> `args.model == ~/.cache/elchat/models/smollm2-135m-instruct`.
    """
    for name, tokenizer in MODEL_ARGS.get(args.command, {}).items():
        value = getattr(args, name, None)
        if value is None:
            continue
        dirs = [str(models.resolve_model_dir(v, tokenizer=tokenizer)) for v in
                (value if isinstance(value, list) else [value])]
        setattr(args, name, dirs if isinstance(value, list) else dirs[0])


def main(argv: list[str] | None = None) -> int:
    """Run one command; bad input prints one line and returns 2. Example: `main(["models", "list"])`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        resolve_model_args(args)
        code = args.func(args)
    except (UserError, ValueError, FileNotFoundError) as e:
        print(f"elchat {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
