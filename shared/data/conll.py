"""CoNLL uploads -> rows {"tokens", "tags"}, and the tag schemes (IOB1, IOB2, BIOES).

Rows hold IOB2 whatever scheme the file was written in; entities() reads IOB2 tags the
conlleval way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.data.upload import DatasetFormatError, ParsedDataset, decode

SCHEMES = ("IOB1", "IOB2", "BIOES")


@dataclass
class _Sentence:
    first_line: int
    tokens: list[str]
    tags: list[str]


def parse_conll(
    data: bytes,
    *,
    token_column: int = 0,
    tag_column: int = -1,
    encoding: str = "utf-8",
    scheme: str = "auto",
) -> ParsedDataset:
    """Rows {"tokens", "tags"}, one per sentence, of a CoNLL file, tags converted to IOB2.

    One token a line, columns separated by whitespace, every token line with as many
    columns as the first; a blank line ends a sentence, and `-DOCSTART-` lines (document
    breaks) are skipped. `scheme` is "auto" (see detect_scheme), "iob1", "iob2" or "bioes".
    """
    declared = None if scheme.lower() == "auto" else _scheme_name(scheme)
    sentences = _conll_sentences(decode(data, encoding), token_column, tag_column)
    if not sentences:
        raise DatasetFormatError("no sentences: every line is blank or -DOCSTART-", field="file")
    source = declared or detect_scheme(sentence.tags for sentence in sentences)
    if source != "BIOES":
        _refuse_bioes_tags(sentences, source)
    rows = [{"tokens": s.tokens, "tags": to_iob2(s.tags, source)} for s in sentences]
    return ParsedDataset("conll", rows, ["tokens", "tags"], scheme=source)


def _conll_sentences(text: str, token_column: int, tag_column: int) -> list[_Sentence]:
    """The sentences of a CoNLL text, each tag checked to look like a tag."""
    sentences: list[_Sentence] = []
    sentence: _Sentence | None = None
    width, width_line = 0, 0  # column count of the first token line, which all must match
    for line, source in enumerate(text.split("\n"), start=1):
        columns = source.split()
        if not columns or columns[0] == "-DOCSTART-":
            sentence = None  # so the blank line after a -DOCSTART- adds no empty sentence
            continue
        if len(columns) != width:
            _check_columns(columns, token_column, tag_column, line)
            if width:
                message = f"expected {width} columns, as on line {width_line}, found {len(columns)}"
                raise DatasetFormatError(message, field="file", line=line)
            width, width_line = len(columns), line
        tag = columns[tag_column]
        if tag != "O" and not (len(tag) > 2 and tag[1] == "-" and tag[0] in "BIES"):
            raise DatasetFormatError(
                f"invalid tag {tag!r}: expected O, or B-, I-, E- or S- and a type (e.g. B-PER)",
                field="tag_column",
                line=line,
            )
        if sentence is None:
            sentence = _Sentence(line, [], [])
            sentences.append(sentence)
        sentence.tokens.append(columns[token_column])
        sentence.tags.append(tag)
    return sentences


def _check_columns(columns: list[str], token_column: int, tag_column: int, line: int) -> None:
    """Both column indexes (negative ones count from the end) exist and differ on this line."""
    count = len(columns)
    for name, index in (("token_column", token_column), ("tag_column", tag_column)):
        if not -count <= index < count:
            message = f"{name} {index} is out of range: the line has {count} columns"
            raise DatasetFormatError(message, field=name, line=line)
    if token_column % count == tag_column % count:
        message = f"token_column {token_column} and tag_column {tag_column} are the same column"
        raise DatasetFormatError(message, field="tag_column", line=line)


def _refuse_bioes_tags(sentences: list[_Sentence], scheme: str) -> None:
    """An E- or S- tag in a file declared IOB1 or IOB2 is an error at its line."""
    for sentence in sentences:
        for offset, tag in enumerate(sentence.tags):
            if tag[0] in "ES":
                raise DatasetFormatError(
                    f"tag {tag!r} is not {scheme} (declare scheme=bioes, or scheme=auto)",
                    field="scheme",
                    line=sentence.first_line + offset,  # a sentence's token lines are adjacent
                )


# --- tag schemes -------------------------------------------------------------------------


def detect_scheme(tag_sequences: Iterable[list[str]]) -> str:
    """The scheme tags are written in, from all of a file's sentences.

    "BIOES" if any tag is S- or E-; else "IOB1" if some entity starts with I- (an I-X not
    after B-X or I-X); else "IOB2".
    """
    starts_inside = False
    for tags in tag_sequences:
        previous = "O"
        for tag in tags:
            if tag[:2] in ("S-", "E-"):
                return "BIOES"
            if tag[:2] == "I-" and previous[2:] != tag[2:]:
                starts_inside = True
            previous = tag
    return "IOB1" if starts_inside else "IOB2"


def to_iob2(tags: list[str], scheme: str) -> list[str]:
    """One sentence's tags in IOB1, IOB2 or BIOES, as IOB2 (every entity starts with B-).

    S-X becomes B-X and E-X becomes I-X. Then, as conlleval reads tags, an I-X that does
    not continue an entity of type X (after O, another type, or an E-/S- tag) starts one
    and becomes B-X: that is the whole IOB1 conversion, and it repairs loose IOB2 too.
    """
    source = _scheme_name(scheme)
    result = []
    open_type: str | None = None  # the type an I- tag may continue; None when none is open
    for tag in tags:
        prefix, kind = _split_tag(tag, source)
        if prefix == "O":
            result.append("O")
            open_type = None
            continue
        starts = prefix in ("B", "S") or kind != open_type
        result.append(("B-" if starts else "I-") + kind)
        open_type = None if prefix in ("E", "S") else kind
    return result


def iob2_to_bioes(tags: list[str]) -> list[str]:
    """IOB2 tags as BIOES: S-X for a one-token entity, B-X ... I-X ... E-X for a longer one.

    Loose IOB2 (an entity starting with I-) is repaired first, as in to_iob2.
    """
    iob2 = to_iob2(tags, "IOB2")
    result = []
    for index, tag in enumerate(iob2):
        if tag == "O":
            result.append(tag)
            continue
        continues = index + 1 < len(iob2) and iob2[index + 1] == "I-" + tag[2:]
        if tag[0] == "B":
            result.append(("B-" if continues else "S-") + tag[2:])
        else:
            result.append(("I-" if continues else "E-") + tag[2:])
    return result


def entities(tags_iob2: list[str]) -> list[tuple[str, int, int]]:
    """(type, start, end) of each entity, end exclusive, read the conlleval way.

    B-X starts an entity, I-X continues one of type X, and an I-X after O or after another
    type starts a new one: ["I-PER", "I-LOC", "O", "B-ORG", "I-ORG"] ->
    [("PER", 0, 1), ("LOC", 1, 2), ("ORG", 3, 5)].
    """
    found: list[tuple[str, int, int]] = []
    for index, tag in enumerate(to_iob2(tags_iob2, "IOB2")):
        if tag[0] == "B":
            found.append((tag[2:], index, index + 1))
        elif tag[0] == "I":  # to_iob2 made it continue the entity just before it
            kind, start, _ = found[-1]
            found[-1] = (kind, start, index + 1)
    return found


def _scheme_name(scheme: str) -> str:
    name = scheme.upper()
    if name not in SCHEMES:
        message = f"unknown tag scheme {scheme!r}; schemes: auto, iob1, iob2, bioes"
        raise DatasetFormatError(message, field="scheme")
    return name


def _split_tag(tag: str, scheme: str) -> tuple[str, str]:
    """("B", "PER") for "B-PER", ("O", "") for "O"; an error for a tag not in `scheme`."""
    if tag == "O":
        return "O", ""
    prefix, _, kind = tag.partition("-")
    if prefix not in (("B", "I", "E", "S") if scheme == "BIOES" else ("B", "I")) or not kind:
        raise DatasetFormatError(f"invalid {scheme} tag {tag!r}", field="tag_column")
    return prefix, kind
