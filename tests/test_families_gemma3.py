"""The `tiny-gemma3` preset end to end (stages 00-04) with the real tokenizer: see tests/family_chain.py."""
import pytest

from family_chain import *  # noqa: F401,F403 (the shared tests, collected here for this family)
from family_chain import run_chain

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return run_chain("gemma3", tmp_path_factory.mktemp("tiny-gemma3") / "runs")
