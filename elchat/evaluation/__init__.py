"""Evaluation: the metrics of the study, one module per task family, and stage 04 that runs them.

- `stage`: stage 04 — `evaluate(model, lang, tasks)` for one model, `evaluate_models` for every
  model of a run and the t-sweep, `check_stage_params`, the task table and the `elchat eval` command;
- `bpc`: bits per character (also CPT's validation metric); `mt`: translation chrF; `mc`: 4-way
  translation multiple choice; `ifeval`: verifiable instructions; `chat_format`: turn ending,
  template leaks, requested language; `safety`: refusals; `reply`: chat retention by forward passes
  (bits per character of the source chat model's replies, end-of-turn probability); `speed`: tokens
  per character and teacher-forced decoding speed against the reference; `turns`: the micro pair's
  chat-turn quality checks; `paired`: paired bootstrap intervals of differences and verdicts;
- `generate`: model loading, prompts, batched greedy decoding and log-likelihoods;
- `results`: the result schema, bootstrap intervals, JSON / tidy CSV files; `figures`: stage 04's plots.

This file imports nothing on purpose: CPT imports `bpc` and the instruction data imports `ifeval`,
and neither should pull in model loading (`stage`, `generate` -> `elchat.models`), which itself
builds the micro pair through CPT — importing the package must not close that loop.
"""
