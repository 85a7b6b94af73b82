"""Builds elchat/evaluation/prompts/ifeval.jsonl deterministically: `python scripts/make_ifeval_prompts.py`.

Each prompt is a writing task plus one or two verifiable instructions (IFEval's ids and kwargs, checked
by `elchat.evaluation.ifeval`); pairs in CONFLICT cannot both hold and are never combined. The training
data of the micro chat model (`elchat.instructions.make_examples`) never repeats one of these prompts.
"""
import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "elchat" / "evaluation" / "prompts" / "ifeval.jsonl"

TASKS = [
    ("Write a short note to a neighbour about a lost cat.", ["cat", "garden"], ["dog", "police"]),
    ("Describe how to make a cup of tea.", ["kettle", "leaves"], ["coffee", "sugar"]),
    ("Explain why the sky looks blue during the day.", ["light", "air"], ["ocean", "paint"]),
    ("Give advice to a student starting at a new school.", ["friends", "teacher"], ["money", "phone"]),
    ("Describe a quiet morning in a small village.", ["bread", "river"], ["car", "city"]),
    ("Explain what a library is to a young child.", ["books", "quiet"], ["internet", "money"]),
    ("Write a thank-you message to a bus driver.", ["kind", "journey"], ["late", "ticket"]),
    ("Describe the taste of a ripe mango.", ["sweet", "juice"], ["sour", "apple"]),
    ("Explain how bees help flowers.", ["pollen", "honey"], ["wasp", "sting"]),
    ("Suggest three ways to save water at home.", ["shower", "tap"], ["garden", "rain"]),
    ("Describe your favourite season and why you like it.", ["weather", "light"], ["hate", "winter"]),
    ("Write a short story about a robot that learns to paint.", ["robot", "colour"], ["war", "laser"]),
    ("Explain how to plant a tree.", ["soil", "roots"], ["plastic", "machine"]),
    ("Write a polite email asking a colleague for a meeting.", ["meeting", "time"], ["urgent", "angry"]),
    ("Describe a market on a busy Saturday.", ["fruit", "people"], ["empty", "quiet"]),
    ("Explain why sleep is important for health.", ["rest", "body"], ["coffee", "pill"]),
    ("Describe a walk along the sea shore.", ["waves", "sand"], ["snow", "mountain"]),
    ("Give tips for learning a new language.", ["practice", "words"], ["app", "exam"]),
    ("Write a short speech for a friend's birthday.", ["friend", "year"], ["old", "cake"]),
    ("Explain how a bicycle works.", ["wheels", "pedals"], ["engine", "fuel"]),
    ("Describe the night sky away from the city.", ["stars", "moon"], ["sun", "cloud"]),
    ("Explain how to cook rice.", ["water", "pot"], ["oven", "salt"]),
    ("Write a short review of a book you enjoyed.", ["story", "author"], ["boring", "film"]),
    ("Describe the job of a farmer.", ["field", "harvest"], ["office", "computer"]),
    ("Explain why people enjoy music.", ["rhythm", "feelings"], ["noise", "money"]),
    ("Give instructions for washing your hands properly.", ["soap", "water"], ["gloves", "towel"]),
    ("Describe a rainy afternoon at home.", ["window", "tea"], ["sun", "beach"]),
    ("Explain what a map is used for.", ["place", "road"], ["phone", "satellite"]),
    ("Write a short poem about the wind.", ["trees", "sky"], ["storm", "rain"]),
    ("Describe how to take care of a houseplant.", ["water", "light"], ["garden", "fertilizer"]),
    ("Explain how to write a good letter.", ["reader", "clear"], ["email", "long"]),
    ("Describe a football match from the view of a fan.", ["goal", "crowd"], ["rain", "referee"]),
    ("Give advice on how to keep a room tidy.", ["shelf", "time"], ["dirty", "money"]),
    ("Explain why the moon changes shape.", ["sun", "shadow"], ["cheese", "cloud"]),
    ("Describe the smell of fresh bread.", ["warm", "bakery"], ["burnt", "cake"]),
    ("Write a short welcome message for new members of a reading club.", ["welcome", "books"], ["rules", "fee"]),
    ("Explain how to make a paper boat.", ["paper", "fold"], ["glue", "scissors"]),
    ("Describe a visit to a museum.", ["history", "paintings"], ["boring", "ticket"]),
    ("Give reasons why walking is good exercise.", ["heart", "legs"], ["car", "gym"]),
    ("Explain how to prepare for a long journey by train.", ["bag", "ticket"], ["plane", "car"]),
]

def instruction(fam, task, rng):
    _, kws, forb = task
    if fam == "words_lt":
        n = rng.choice([40, 50, 60, 80]); return ("length_constraints:number_words", {"relation": "less than", "num_words": n}, f"Answer in fewer than {n} words.")
    if fam == "words_ge":
        n = rng.choice([50, 80, 100]); return ("length_constraints:number_words", {"relation": "at least", "num_words": n}, f"Your answer must contain at least {n} words.")
    if fam == "sent_lt":
        n = rng.choice([3, 4, 5]); return ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": n}, f"Use fewer than {n} sentences.")
    if fam == "sent_ge":
        n = rng.choice([4, 5, 6]); return ("length_constraints:number_sentences", {"relation": "at least", "num_sentences": n}, f"Write at least {n} sentences.")
    if fam == "paragraphs":
        n = rng.choice([2, 3]); return ("length_constraints:number_paragraphs", {"num_paragraphs": n}, f"Write exactly {n} paragraphs, separated from each other by the markdown divider ***.")
    if fam == "include":
        return ("keywords:existence", {"keywords": list(kws)}, f'Include the words "{kws[0]}" and "{kws[1]}" in your answer.')
    if fam == "forbid":
        return ("keywords:forbidden_words", {"forbidden_words": list(forb)}, f'Do not use the words "{forb[0]}" or "{forb[1]}".')
    if fam == "freq":
        n = rng.choice([2, 3]); return ("keywords:frequency", {"keyword": kws[0], "frequency": n, "relation": "at least"}, f'Use the word "{kws[0]}" at least {n} times.')
    if fam == "upper":
        return ("change_case:english_capital", {}, "Write your entire answer in English capital letters only.")
    if fam == "lower":
        return ("change_case:english_lowercase", {}, "Write your entire answer in lowercase letters; no capital letters are allowed.")
    if fam == "start":
        p = rng.choice(["Here is my answer:", "Dear reader", "Of course."]); return ("startend:start_checker", {"start_phrase": p}, f'Start your answer with the phrase "{p}"')
    if fam == "end":
        p = rng.choice(["Is there anything else I can help with?", "That is all.", "Thank you for reading."]); return ("startend:end_checker", {"end_phrase": p}, f'End your answer with the exact phrase "{p}" and nothing after it.')
    if fam == "quote":
        return ("startend:quotation", {}, "Wrap your entire answer in double quotation marks.")
    if fam == "bullets":
        n = rng.choice([2, 3, 4]); return ("detectable_format:number_bullet_lists", {"num_bullets": n}, f"Give exactly {n} bullet points, using markdown bullets such as:\n* This is a point.")
    if fam == "json":
        return ("detectable_format:json_format", {}, "Format your entire output as JSON.")
    if fam == "title":
        return ("detectable_format:title", {}, "Give your answer a title wrapped in double angular brackets, such as <<my title>>.")
    if fam == "no_comma":
        return ("punctuation:no_comma", {}, "Do not use any commas in your answer.")
    if fam == "ps":
        return ("detectable_content:postscript", {"postscript_marker": "P.S."}, "At the end of your answer, add a postscript starting with P.S.")
    raise KeyError(fam)

FAMILIES = ["words_lt", "words_ge", "sent_lt", "sent_ge", "paragraphs", "include", "forbid", "freq",
            "upper", "lower", "start", "end", "quote", "bullets", "json", "title", "no_comma", "ps"]
SECOND = ["no_comma", "forbid", "include", "words_lt", "end", "ps", "lower", "title", "start"]
CONFLICT = [{"upper", "lower"}, {"json", "no_comma"}, {"json", "end"}, {"json", "ps"}, {"json", "lower"},
            {"json", "title"}, {"json", "start"}, {"json", "include"}, {"quote", "end"}, {"quote", "ps"},
            {"quote", "start"}, {"quote", "title"}, {"words_lt", "words_ge"}, {"words_lt", "sent_ge"},
            {"words_lt", "paragraphs"}, {"start", "title"}, {"end", "ps"}, {"upper", "start"},
            {"upper", "end"}, {"upper", "ps"}, {"include", "forbid"}, {"freq", "forbid"}, {"freq", "include"},
            {"upper", "title"}, {"lower", "title"}, {"lower", "ps"}, {"lower", "start"}, {"lower", "end"}, {"words_lt", "words_lt"}]



def make_prompts(n: int = 162, seed: int = 0) -> list[dict]:
    """`n` prompts cycling through TASKS and FAMILIES; two of three get a second instruction."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        task = TASKS[i % len(TASKS)]
        fams = [FAMILIES[i % len(FAMILIES)]]
        if i % 3 != 2:
            cands = [f for f in SECOND if f != fams[0] and {f, fams[0]} not in CONFLICT]
            fams.append(rng.choice(cands))
        ins = [instruction(f, task, rng) for f in fams]
        prompt = task[0] + " " + " ".join(t for _, _, t in ins)
        out.append({"key": i, "prompt": prompt, "instruction_id_list": [a for a, _, _ in ins],
                    "kwargs": [k for _, k, _ in ins]})
    assert len({o["prompt"] for o in out}) == len(out)
    return out


def main(path=OUT) -> None:
    out = make_prompts()
    with open(path, "w", encoding="utf-8") as f:
        for o in out:
            f.write(json.dumps(o, ensure_ascii=False) + "\n")
    print(len(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else OUT)
