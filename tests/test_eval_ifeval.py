"""IFEval checkers on hand-made passing and failing responses, strict and loose scoring."""
import pytest

from elchat.evaluation import ifeval
from elchat.evaluation.ifeval import check, follows, load_prompts, loose_variants, score

CASES = [  # (instruction, kwargs, passing response, failing response)
    ("length_constraints:number_words", {"relation": "less than", "num_words": 5},
     "Tea is nice.", "Tea is a very nice drink indeed."),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 4},
     "one two three four", "one two three"),
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3},
     "One. Two!", "One. Two! Three?"),
    ("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 2},
     "Rain falls. Birds sing.", "Rain falls and birds sing"),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2},
     "First part.\n***\nSecond part.", "First part.\n\nSecond part."),
    ("keywords:existence", {"keywords": ["cat", "garden"]},
     "My Cat is in the garden.", "My cat is at home."),
    ("keywords:forbidden_words", {"forbidden_words": ["dog"]},
     "The hotdogs are ready.", "The dog barks."),
    ("keywords:frequency", {"keyword": "tea", "frequency": 2, "relation": "at least"},
     "Tea, more tea.", "Tea is good."),
    ("change_case:english_capital", {}, "HELLO THERE!", "Hello THERE!"),
    ("change_case:english_lowercase", {}, "hello there, 42.", "hello There"),
    ("startend:start_checker", {"start_phrase": "Of course."}, "of course. Here it is.", "Sure. Of course."),
    ("startend:end_checker", {"end_phrase": "That is all."}, "Done.\nThat is all.  ", "That is all. Bye."),
    ("startend:quotation", {}, '"Quoted answer."', 'Quoted "answer."'),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2},
     "Points:\n* one\n- two", "* one\n* two\n* three"),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', "{'a': 1}"),
    ("detectable_format:title", {}, "<<My Day>>\nIt was fine.", "<<>> My Day"),
    ("punctuation:no_comma", {}, "No commas here.", "Well, one comma."),
    ("detectable_content:postscript", {"postscript_marker": "P.S."},
     "Bye.\nP. S. see you", "Bye. PS see you"),
]


@pytest.mark.parametrize("iid,kwargs,good,bad", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_checker_strict(iid, kwargs, good, bad):
    assert check(iid, good, kwargs) is True
    assert check(iid, bad, kwargs) is False


def test_every_checker_has_a_case():
    assert {c[0] for c in CASES} == set(ifeval.CHECKERS)


def test_empty_response_follows_nothing():
    assert check("punctuation:no_comma", "   ") is False


def test_loose_variants_are_ifevals_eight():
    r = "Sure, here it is:\n**HELLO**\nHope this helps"
    v = loose_variants(r)
    assert len(v) == 8 and v[0] == r
    assert "**HELLO**" in v and "HELLO" in v            # both last+first removed, with/without '*'
    assert v[2] == "**HELLO**\nHope this helps" and v[3] == "Sure, here it is:\n**HELLO**"


def test_loose_accepts_what_strict_rejects():
    prompt = {"instruction_id_list": ["change_case:english_capital", "punctuation:no_comma"],
              "kwargs": [{}, {}]}
    response = "Sure, here it is:\n**HELLO WORLD**\nHope this helps"
    assert follows(prompt, response) == [False, False]
    assert follows(prompt, response, loose=True) == [True, True]


def test_score_prompt_and_instruction_level():
    prompts = [{"instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"],
                "kwargs": [{}, {}]},
               {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}]
    s = score(prompts, ["all lower no comma", "A, B"])
    # prompt 1 follows both, prompt 2 fails its only one: prompt level 1/2, instruction level 2/3
    assert s["prompt_strict"]["value"] == pytest.approx(1 / 2)
    assert s["instruction_strict"]["value"] == pytest.approx(2 / 3)
    assert s["instruction_strict"]["n"] == 3 and s["prompt_loose"]["n"] == 2


def test_shipped_prompts():
    prompts = load_prompts()
    assert len(prompts) >= 150
    assert len({p["prompt"] for p in prompts}) == len(prompts)
    for p in prompts:
        assert len(p["instruction_id_list"]) == len(p["kwargs"]) >= 1
        assert set(p["instruction_id_list"]) <= set(ifeval.CHECKERS)
    assert load_prompts() == prompts  # deterministic


def test_word_and_sentence_counters():
    from elchat import instructions
    assert ifeval.count_words("Hi there, you. It's 3 o'clock") == 8  # It, s, o, clock
    assert ifeval.count_sentences("One. Two!  Three? four") == 4 and ifeval.count_sentences(" ... ") == 0
    # the instruction data is built with the very counters the checkers use
    assert instructions.count_words is ifeval.count_words
    assert instructions.count_sentences is ifeval.count_sentences
