"""The `tiny-llama3` preset end to end (stages 00-04) with the real tokenizer: see tests/family_chain.py."""
import pytest

from family_chain import *  # noqa: F401,F403 (the shared tests, collected here for this family)
from family_chain import run_chain

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return run_chain("llama3", tmp_path_factory.mktemp("tiny-llama3") / "runs")


def test_llama30_tokenizer_expansion():
    """Llama-3.0's tokenizer.json (`ignore_merges: true`, specials only in added_tokens) keeps the
    promise too: ids (specials included) kept after reload, other text identical, round trip."""
    from elchat import families, vocab
    from elchat.data import load_texts
    from elchat.vocab_check import reload

    from family_chain import check_expansion

    if not families.available("llama3.0"):
        pytest.skip("the llama3.0 tokenizer fixture was not fetched (run `make setup`)")
    old = families.load_tokenizer("llama3.0")
    assert old.convert_tokens_to_ids("<|eot_id|>") == 128009
    new, info = vocab.expand_vocabulary(old, load_texts("am", "train")[:2000], 200)
    assert info["num_added"] == 200 and info["first_new_id"] == 128256
    again = reload(new)
    check_expansion(old, again)
    assert again.convert_tokens_to_ids("<|eot_id|>") == 128009
