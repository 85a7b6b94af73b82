"""IFEval-style prompts get a generation budget that fits their instructions (elchat.evaluation.ifeval)."""
import math

import pytest

from elchat.evaluation import ifeval


class _FakeContext:
    """Records the max_new_tokens each prompt was generated with; answers with an empty string."""

    def __init__(self, tokenizer, max_new_tokens=48):
        self.tokenizer, self.max_new_tokens, self.limit, self.seed = tokenizer, max_new_tokens, None, 0
        self.notes, self.samples, self.budgets = [], {}, {}

    def take(self, items):
        return list(items)

    def prompt(self, user):
        return user

    def generate(self, prompts, **kw):
        for p in prompts:
            self.budgets[p] = kw.get("max_new_tokens", self.max_new_tokens)
        return [{"text": ""} for _ in prompts]


def _words(n, relation="at least"):
    return {"prompt": "Write.", "instruction_id_list": ["length_constraints:number_words"],
            "kwargs": [{"relation": relation, "num_words": n}]}


def test_required_words_by_hand():
    assert ifeval.required_words(_words(80)) == 80 + ifeval.MARGIN_WORDS
    assert ifeval.required_words(_words(40, "less than")) == 40 + ifeval.MARGIN_WORDS  # room to break it
    five = {"instruction_id_list": ["length_constraints:number_sentences", "punctuation:no_comma"],
            "kwargs": [{"relation": "at least", "num_sentences": 5}, {}]}
    assert ifeval.required_words(five) == 5 * ifeval.WORDS_PER_SENTENCE + ifeval.MARGIN_WORDS
    plain = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    assert ifeval.required_words(plain) == ifeval.MARGIN_WORDS


def test_token_budget_rounds_up_keeps_the_floor_and_the_cap():
    step = ifeval.BUDGET_STEP
    assert ifeval.token_budget(_words(80), 1.3, 48) == math.ceil((80 + ifeval.MARGIN_WORDS) * 1.3 / step) * step
    assert ifeval.token_budget({"instruction_id_list": [], "kwargs": []}, 1.3, 48) == 48
    assert ifeval.token_budget(_words(100), 4.0, 8) == ifeval.BUDGET_CAP * 8  # the run's budget bounds the cost


def test_every_shipped_prompt_gets_room_for_its_instructions(tiny_tokenizer):
    """Old behaviour: every prompt got the run's max_new_tokens (48), which cut 'at least 80 words'."""
    floor = 48
    ctx = _FakeContext(tiny_tokenizer, max_new_tokens=floor)
    prompts = ifeval.load_prompts()
    ifeval.run(ctx)
    per_word = ifeval.tokens_per_word(tiny_tokenizer, [p["prompt"] for p in prompts])
    over = 0
    for p in prompts:
        need = ifeval.required_words(p) * per_word
        expected = min(max(floor, math.ceil(need / ifeval.BUDGET_STEP) * ifeval.BUDGET_STEP), ifeval.BUDGET_CAP * floor)
        assert ctx.budgets[p["prompt"]] == expected
        over += need > ifeval.BUDGET_CAP * floor
        if need <= ifeval.BUDGET_CAP * floor:
            assert ctx.budgets[p["prompt"]] >= need
    long = next(p for p in prompts if {"relation": "at least", "num_words": 100} in p["kwargs"])
    assert ctx.budgets[long["prompt"]] > floor
    assert any(f"{over} of {len(prompts)} prompts need more" in n for n in ctx.notes)


def test_tokens_per_word_by_hand(tiny_tokenizer):
    texts = ["one two three", "four, five."]
    tokens = sum(len(tiny_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    assert ifeval.tokens_per_word(tiny_tokenizer, texts) == pytest.approx(tokens / 5)
