"""Generate shared/builtin/sentiment.tsv, the built-in sentiment set (run once; output committed).

Sentences are composed from templates written for Seqtrain: a subject, a verb phrase and
an opinion, with negation flipping the label so that word order matters.
Usage: python scripts/make_sentiment.py > shared/builtin/sentiment.tsv
"""

import random

SUBJECTS = [
    "the film",
    "this movie",
    "the plot",
    "the acting",
    "the soundtrack",
    "the ending",
    "the script",
    "the cast",
    "the director's work",
    "the story",
    "the dialogue",
    "the pacing",
    "the camera work",
    "the lead performance",
    "the final act",
    "the humour",
    "the set design",
    "this sequel",
    "the documentary",
    "the animation",
]
POSITIVE = [
    "wonderful",
    "moving",
    "brilliant",
    "delightful",
    "gripping",
    "charming",
    "superb",
    "funny",
    "beautiful",
    "clever",
    "heartfelt",
    "memorable",
    "thrilling",
    "fresh",
    "great",
]
NEGATIVE = [
    "dull",
    "boring",
    "clumsy",
    "tedious",
    "awful",
    "predictable",
    "lifeless",
    "bland",
    "messy",
    "forgettable",
    "painful",
    "shallow",
    "confusing",
    "weak",
    "terrible",
]
VERBS = ["is", "was", "felt", "seemed", "turned out to be"]
INTENSIFIERS = ["", "", "really ", "truly ", "quite ", "remarkably ", "utterly "]
OPENERS = ["", "", "honestly , ", "overall , ", "i thought ", "in the end , ", "frankly , "]
ENDINGS = [" .", " .", " !", " , and i would say so again .", " from start to finish ."]
CONTRASTS = [
    ("although {a} {v} {w1} , {b} {v2} {w2} .", "second"),
    ("{a} {v} {w1} , but {b} {v2} {w2} .", "second"),
]


def sentence(rng: random.Random) -> tuple[str, str]:
    subject = rng.choice(SUBJECTS)
    verb = rng.choice(VERBS)
    positive = rng.random() < 0.5
    word = rng.choice(POSITIVE if positive else NEGATIVE)
    kind = rng.random()
    if kind < 0.25:  # negation flips the label
        text = f"{rng.choice(OPENERS)}{subject} {verb} not {rng.choice(INTENSIFIERS)}{word}{rng.choice(ENDINGS)}"
        return text, "negative" if positive else "positive"
    if kind < 0.45:  # contrast: the clause after "but" decides
        template, _ = rng.choice(CONTRASTS)
        other = rng.choice(NEGATIVE if positive else POSITIVE)
        text = template.format(
            a=rng.choice(SUBJECTS),
            v=rng.choice(VERBS),
            w1=other,
            b=subject,
            v2=verb,
            w2=word,
        )
        return text, "positive" if positive else "negative"
    text = f"{rng.choice(OPENERS)}{subject} {verb} {rng.choice(INTENSIFIERS)}{word}{rng.choice(ENDINGS)}"
    return text, "positive" if positive else "negative"


def main(rows: int = 800, seed: int = 20261128) -> None:
    rng = random.Random(seed)
    seen: set[str] = set()
    print("text\tlabel")
    while len(seen) < rows:
        text, label = sentence(rng)
        if text in seen:
            continue
        seen.add(text)
        print(f"{text}\t{label}")


if __name__ == "__main__":
    main()
