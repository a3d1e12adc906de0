"""Generated built-in datasets, one per task, made deterministically in memory (offline).

stories   plain text for language modelling: short templated sentences
entities  CoNLL (IOB2) sentences with PER, LOC and ORG entities, some of several tokens
dates     JSON Lines pairs for seq2seq: a date in words or numbers -> its ISO 8601 form
(The classification set, sentiment, is a file in builtin/; see scripts/make_sentiment.py.)
"""

from __future__ import annotations

import datetime
import json
import random

_PEOPLE = [
    "Ada Lovelace",
    "Alan Turing",
    "Grace Hopper",
    "Maria",
    "Tom",
    "Lena Berg",
    "Omar Haddad",
    "Yuki Sato",
    "Pablo",
    "Ines Costa",
    "Kwame Mensah",
    "Sofia",
]
_PLACES = [
    "Paris",
    "New York",
    "Lagos",
    "Kyoto",
    "Buenos Aires",
    "Oslo",
    "Cairo",
    "Lima",
    "San Francisco",
    "Berlin",
    "Nairobi",
    "Hanoi",
]
_ORGS = [
    "Acme Corp",
    "Globex",
    "Initech",
    "Red Cross",
    "Umbrella Labs",
    "Northwind",
    "Blue Harbor Bank",
    "Stark Industries",
    "Contoso",
    "Wayne Foundation",
]
_TEMPLATES = [
    "{per} moved to {loc} last year .",
    "{per} works for {org} in {loc} .",
    "{org} opened an office in {loc} .",
    "yesterday {per} met {per2} at {org} .",
    "{per} flew from {loc} to {loc2} on monday .",
    "the report from {org} was praised by {per} .",
    "{loc} welcomed {per} and the team from {org} .",
    "after the talk , {per} returned to {loc} .",
]
_SUBJECTS = [
    "the old sailor",
    "a small fox",
    "the baker",
    "my neighbour",
    "the young queen",
    "a tired student",
    "the river",
    "the clockmaker",
    "a quiet child",
    "the wind",
]
_VERBS = ["watched", "followed", "remembered", "carried", "painted", "found", "lost", "answered"]
_OBJECTS = [
    "the silver moon",
    "a broken lantern",
    "the northern road",
    "an open door",
    "the evening bell",
    "a paper boat",
    "the empty market",
    "a long letter",
]
_TAILS = [
    "before dawn",
    "in the rain",
    "without a word",
    "near the harbour",
    "once again",
    "at the end of the day",
    "with great care",
    "as the bells rang",
]


def stories(sentences: int = 3000, seed: int = 7) -> bytes:
    """About 150 kB of text with a small grammar, so a language model has something to learn."""
    rng = random.Random(seed)
    lines = []
    for _ in range(sentences):
        sentence = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}."
        lines.append(sentence[0].upper() + sentence[1:])
    paragraphs = [" ".join(lines[i : i + 5]) for i in range(0, len(lines), 5)]
    return ("\n".join(paragraphs) + "\n").encode("utf-8")


def _tagged(text: str, kind: str) -> list[tuple[str, str]]:
    words = text.split()
    return [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(words)]


def entities(sentences: int = 600, seed: int = 11) -> bytes:
    """CoNLL text (token, tag) in IOB2 with blank lines between sentences."""
    rng = random.Random(seed)
    blocks = ["-DOCSTART- O\n"]
    for _ in range(sentences):
        template = rng.choice(_TEMPLATES)
        slots = {
            "per": ("PER", rng.choice(_PEOPLE)),
            "per2": ("PER", rng.choice(_PEOPLE)),
            "loc": ("LOC", rng.choice(_PLACES)),
            "loc2": ("LOC", rng.choice(_PLACES)),
            "org": ("ORG", rng.choice(_ORGS)),
        }
        pairs: list[tuple[str, str]] = []
        for piece in template.split():
            if piece.startswith("{") and piece.endswith("}"):
                kind, text = slots[piece[1:-1]]
                pairs += _tagged(text, kind)
            else:
                pairs.append((piece, "O"))
        blocks.append("".join(f"{token} {tag}\n" for token, tag in pairs))
    return "\n".join(blocks).encode("utf-8")


_MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
# Ways to write a date, each in a few spellings; a small vocabulary (months, days, years
# 1990-2029, "the", "of") so a tiny model learns the mapping in a few epochs.
_DATE_FORMS = [
    "{month} {ordinal}, {year}",  # march 3rd, 2021
    "{day} {Month} {year}",  # 3 March 2021
    "the {ordinal} of {month} {year}",  # the 3rd of march 2021
    "{dd}/{mm}/{year}",  # 03/03/2021 (day first)
    "{Month} {day}, {year}",  # March 3, 2021
    "{ordinal} {month} {year}",  # 3rd march 2021
]
_FIRST_DAY = datetime.date(1990, 1, 1).toordinal()
_LAST_DAY = datetime.date(2029, 12, 31).toordinal()


def _ordinal(day: int) -> str:
    suffix = "th" if 10 < day < 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def dates(pairs: int = 2000, seed: int = 13) -> bytes:
    """JSON Lines {"source": "the 3rd of march 2021", "target": "2021-03-03"}, one a line."""
    rng = random.Random(seed)
    lines = []
    for _ in range(pairs):
        date = datetime.date.fromordinal(rng.randint(_FIRST_DAY, _LAST_DAY))
        month = _MONTHS[date.month - 1]
        source = rng.choice(_DATE_FORMS).format(
            month=month,
            Month=month.capitalize(),
            day=date.day,
            ordinal=_ordinal(date.day),
            dd=f"{date.day:02d}",
            mm=f"{date.month:02d}",
            year=date.year,
        )
        lines.append(json.dumps({"source": source, "target": date.isoformat()}))
    return ("\n".join(lines) + "\n").encode("utf-8")
