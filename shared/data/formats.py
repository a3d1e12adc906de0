"""Uploaded dataset files (bytes) -> rows, and statistics that describe them.

Formats: delimited text with a header (TSV, CSV), JSON Lines, plain text (language
modelling) and CoNLL (one token a line, entity tags). Every problem is a DatasetFormatError
that says what is wrong, names the upload option to fix (`field`) and, where there is one,
the 1-based line and the byte offset, so the API can show the user exactly where to look.
Standard library only: the API imports this without torch.

    parsed = parse_delimited(data, delimiter="\\t", text_column="sentence", label_column="label")
    statistics(parsed)  # {"rows": 67349, "label_counts": {"0": 29780, "1": 37569}, ...}

Rows use fixed keys whatever the file calls its columns: {"text", "label"} for
classification, {"text"} for plain text, {"tokens", "tags"} for CoNLL (tags in IOB2).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from shared.protocol import TrainerFailure

SCHEMES = ("IOB1", "IOB2", "BIOES")
_BOM = "\ufeff"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class DatasetFormatError(TrainerFailure, ValueError):
    """An uploaded dataset cannot be read: what is wrong, where, and which option to fix.

    `field` is the upload option the error concerns ("file", "encoding", "delimiter",
    "text_column", "label_column", "text_field", "label_field", "token_column",
    "tag_column", "scheme"); `line` is 1-based; `byte_offset` counts from the file's first
    byte. str() puts the location first: "line 3, byte 57: invalid UTF-8 byte 0xe9 (...)".
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        line: int | None = None,
        byte_offset: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.line = line
        self.byte_offset = byte_offset

    def __str__(self) -> str:
        where = [f"line {self.line}"] if self.line is not None else []
        if self.byte_offset is not None:
            where.append(f"byte {self.byte_offset}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


@dataclass
class ParsedDataset:
    """A parsed upload.

    format: "tsv", "csv", "jsonl", "text" or "conll".
    rows: one dict per example, keyed by `columns` (see the module docstring).
    text: the whole text, for the "text" format only (what a language model trains on).
    scheme: the tag scheme the CoNLL file was written in ("IOB1", "IOB2" or "BIOES");
        its rows hold IOB2 whatever it was.
    """

    format: str
    rows: list[dict[str, Any]]
    columns: list[str]
    text: str | None = None
    scheme: str | None = None


# --- decoding ----------------------------------------------------------------------------


def decode(data: bytes, encoding: str = "utf-8") -> str:
    """The text of an uploaded file, without a leading byte-order mark.

    Raises DatasetFormatError for an unknown encoding, for a byte the encoding cannot
    decode (with its line, absolute byte offset and value) and for an empty file.
    """
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        raise _decode_error(data, encoding, err) from None
    except LookupError:  # an unknown name, or a bytes-to-bytes codec such as "base64"
        raise DatasetFormatError(f"unknown text encoding {encoding!r}", field="encoding") from None
    except UnicodeError as err:  # a codec with its own rules, such as "idna"
        message = f"cannot decode the file as {encoding}: {err}"
        raise DatasetFormatError(message, field="encoding") from None
    text = text.removeprefix(_BOM)
    if not text.strip():
        detail = "" if not data else " (it holds only whitespace)"
        raise DatasetFormatError(f"file is empty{detail}", field="file")
    return text


def _decode_error(data: bytes, encoding: str, err: UnicodeDecodeError) -> DatasetFormatError:
    # Count line ends in the text before the bad byte, so lines are right in any encoding.
    line = data[: err.start].decode(encoding, errors="replace").count("\n") + 1
    name = codecs.lookup(encoding).name.upper()
    # A UTF-16 byte-order mark is why a file "in UTF-8" fails at byte 0: say so.
    suggestion = "utf-16" if data[:2] in _UTF16_BOMS else "latin-1"
    return DatasetFormatError(
        f"invalid {name} byte 0x{data[err.start]:02x} "
        f"(declare the file's encoding, e.g. encoding={suggestion})",
        field="encoding",
        line=line,
        byte_offset=err.start,
    )


# --- TSV and CSV -------------------------------------------------------------------------


def parse_delimited(
    data: bytes,
    *,
    delimiter: str,
    text_column: str,
    label_column: str | None = None,
    encoding: str = "utf-8",
    max_classes: int = 1000,
) -> ParsedDataset:
    """Rows {"text", "label"} of a TSV (delimiter "\\t") or CSV (",") file with a header.

    Cells are stripped of surrounding whitespace (SST-2 has a space before each tab, CSV
    files often one after each comma); blank lines are skipped. Every row needs as many
    fields as the header, a non-empty text and, when `label_column` is given, a non-empty
    label; at most `max_classes` distinct labels.
    """
    if delimiter not in ("\t", ","):
        raise DatasetFormatError(
            f"delimiter must be a tab or a comma, not {delimiter!r}", field="delimiter"
        )
    records = _csv_records(decode(data, encoding), delimiter)
    header_line, header = next(records)  # decode() refuses a file without a non-blank line
    selected = {"text": text_column}  # row key -> the file's column
    if label_column is not None:
        selected["label"] = label_column
    indexes = {
        key: _column_index(header, header_line, column, f"{key}_column", delimiter)
        for key, column in selected.items()
    }
    rows = []
    for line, cells in records:
        if len(cells) != len(header):
            raise _ragged_row(len(header), len(cells), line, delimiter)
        rows.append({key: _cell(cells, indexes[key], selected[key], key, line) for key in selected})
    if not rows:
        raise DatasetFormatError("file has a header but no rows", field="file")
    if label_column is not None:
        _check_classes(rows, max_classes, repr(label_column), "label_column")
    columns = list(selected)
    return ParsedDataset("tsv" if delimiter == "\t" else "csv", rows, columns)


def _csv_records(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, stripped cells) of each record that is not a blank line."""
    # QUOTE_NONE for TSV: SST-2 and its like hold bare quotes ("`` the film '' ...") that
    # the default quoting would read as the start of a field spanning many lines.
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=delimiter,
        quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL,
        skipinitialspace=True,  # so `1, "a, b"` quotes "a, b" as a person reading it would
    )
    next_line = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DatasetFormatError(
                f"cannot read the row: {err}", field="file", line=reader.line_num
            ) from None
        line, next_line = next_line, reader.line_num + 1
        cells = [cell.strip() for cell in cells]
        if len(cells) > 1 or (cells and cells[0]):
            yield line, cells


def _column_index(header: list[str], line: int, column: str, field: str, delimiter: str) -> int:
    """Where `column` is in the header; the error lists the columns there are."""
    found = [index for index, name in enumerate(header) if name == column]
    if len(found) == 1:
        return found[0]
    if found:
        message = f"column {column!r} appears {len(found)} times in the header"
        raise DatasetFormatError(message, field=field, line=line)
    message = f"no column {column!r} in the header; columns: {', '.join(map(repr, header))}"
    other = "," if delimiter == "\t" else "\t"
    if len(header) == 1 and other in header[0]:  # the usual cause: the wrong delimiter
        message += f" (one column: is the file {'comma' if other == ',' else 'tab'}-separated?)"
    raise DatasetFormatError(message, field=field, line=line)


def _ragged_row(expected: int, found: int, line: int, delimiter: str) -> DatasetFormatError:
    hint = (
        "a tab inside a text breaks a TSV row"
        if delimiter == "\t"
        else "a field holding a comma must be quoted, and every quote closed"
    )
    return DatasetFormatError(
        f"expected {expected} fields, as in the header, found {found} ({hint})",
        field="file",
        line=line,
    )


def _cell(cells: list[str], index: int, column: str, kind: str, line: int) -> str:
    if not cells[index]:
        message = f"empty {kind} in column {column!r}"
        raise DatasetFormatError(message, field=f"{kind}_column", line=line)
    return cells[index]


def _check_classes(rows: list[dict[str, Any]], max_classes: int, name: str, field: str) -> None:
    count = len({row["label"] for row in rows})
    if count > max_classes:
        raise DatasetFormatError(
            f"{name} has {count} distinct labels, more than the limit of {max_classes} "
            "(is it the label column?)",
            field=field,
        )


# --- JSON Lines --------------------------------------------------------------------------


def parse_jsonl(
    data: bytes,
    *,
    text_field: str,
    label_field: str | None = None,
    encoding: str = "utf-8",
    max_classes: int = 1000,
) -> ParsedDataset:
    """Rows {"text", "label"} of a JSON Lines file: one JSON object a line, blank lines skipped.

    The text must be a non-empty string, kept as it is. A label may be a string, an integer
    or a boolean and is stored as a string: 1 -> "1", true -> "true" (as the file spells it).
    """
    rows = []
    for line, source in enumerate(decode(data, encoding).split("\n"), start=1):
        if not source.strip():
            continue
        record = _json_object(source, line)
        row = {"text": _json_text(record, text_field, line)}
        if label_field is not None:
            row["label"] = _json_label(record, label_field, line)
        rows.append(row)
    if label_field is None:
        return ParsedDataset("jsonl", rows, ["text"])
    _check_classes(rows, max_classes, f"field {label_field!r}", "label_field")
    return ParsedDataset("jsonl", rows, ["text", "label"])


def _json_object(source: str, line: int) -> dict[str, Any]:
    try:
        value = json.loads(source)
    except json.JSONDecodeError as err:
        message = f"invalid JSON: {err.msg} at column {err.colno} (JSON Lines: one object a line)"
        raise DatasetFormatError(message, field="file", line=line) from None
    if not isinstance(value, dict):
        message = f"expected a JSON object, found {_json_kind(value)}"
        raise DatasetFormatError(message, field="file", line=line)
    return value


def _json_field(record: dict[str, Any], name: str, field: str, line: int) -> Any:
    if name not in record:
        names = ", ".join(map(repr, record)) or "none"
        message = f"no field {name!r}; fields: {names}"
        raise DatasetFormatError(message, field=field, line=line)
    return record[name]


def _json_text(record: dict[str, Any], name: str, line: int) -> str:
    value = _json_field(record, name, "text_field", line)
    if isinstance(value, str) and value.strip():
        return value
    message = f"field {name!r} must be a non-empty string, found {_json_kind(value)}"
    raise DatasetFormatError(message, field="text_field", line=line)


def _json_label(record: dict[str, Any], name: str, line: int) -> str:
    value = _json_field(record, name, "label_field", line)
    if isinstance(value, bool):  # before int: bool is an int in Python
        return json.dumps(value)
    if isinstance(value, int) or (isinstance(value, str) and value.strip()):
        return str(value)
    message = (
        f"field {name!r} must be a non-empty string, an integer or a boolean, "
        f"found {_json_kind(value)}"
    )
    raise DatasetFormatError(message, field="label_field", line=line)


def _json_kind(value: Any) -> str:
    """What a JSON value is, in words, for error messages."""
    if isinstance(value, str):
        return "a string" if value.strip() else "an empty string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return f"the number {value}"
    return "an array" if isinstance(value, list) else "an object"


# --- plain text --------------------------------------------------------------------------


def parse_text(data: bytes, *, encoding: str = "utf-8") -> ParsedDataset:
    """Plain text for language modelling.

    `text` is the whole file with "\\r\\n" and "\\r" line ends made "\\n" (so a file saved
    on Windows adds no "\\r" to a character vocabulary); a language model trains on it.
    `rows` holds each non-blank line as {"text": line}, for statistics.
    """
    text = decode(data, encoding).replace("\r\n", "\n").replace("\r", "\n")
    rows = [{"text": line} for line in text.split("\n") if line.strip()]
    return ParsedDataset("text", rows, ["text"], text=text)


# --- CoNLL -------------------------------------------------------------------------------


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


# --- statistics --------------------------------------------------------------------------


def statistics(parsed: ParsedDataset) -> dict[str, Any]:
    """Numbers that describe a parsed dataset, for the user to check it before training.

    Every format: "rows", "tokens_per_row" ({"p50", "p95", "max", "mean"}; tokens split on
    whitespace, a CoNLL row's tokens are its sentence) and "vocabulary_size" (distinct
    tokens). With labels: "label_counts" and "num_labels". Text: "characters" (distinct)
    and "text_length". CoNLL: "sentences", "tokens", "entities" and "tag_counts" (IOB2).
    Percentiles use the nearest-rank method: the p-th percentile of n sorted values is the
    value at rank ceil(p / 100 * n), so it is always one of the values.
    """
    if parsed.format == "conll":
        return _conll_statistics(parsed.rows)
    token_lists = [row["text"].split() for row in parsed.rows]
    stats: dict[str, Any] = {"rows": len(parsed.rows), **_token_statistics(token_lists)}
    if "label" in parsed.columns:
        counts = Counter(row["label"] for row in parsed.rows)
        stats["label_counts"] = {label: counts[label] for label in sorted(counts, key=_label_key)}
        stats["num_labels"] = len(counts)
    if parsed.text is not None:
        stats["characters"] = len(set(parsed.text))
        stats["text_length"] = len(parsed.text)
    return stats


def _conll_statistics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    token_lists = [row["tokens"] for row in rows]
    entity_counts = Counter(kind for row in rows for kind, _, _ in entities(row["tags"]))
    tag_counts = Counter(tag for row in rows for tag in row["tags"])
    return {
        "rows": len(rows),
        **_token_statistics(token_lists),
        "sentences": len(rows),
        "tokens": sum(map(len, token_lists)),
        "entities": dict(sorted(entity_counts.items())),
        "tag_counts": dict(sorted(tag_counts.items())),
    }


def _token_statistics(token_lists: list[list[str]]) -> dict[str, Any]:
    lengths = sorted(map(len, token_lists))
    vocabulary = {token for tokens in token_lists for token in tokens}
    mean = round(sum(lengths) / len(lengths), 2) if lengths else 0.0
    return {
        "tokens_per_row": {
            "p50": _nearest_rank(lengths, 50),
            "p95": _nearest_rank(lengths, 95),
            "max": lengths[-1] if lengths else 0,
            "mean": mean,
        },
        "vocabulary_size": len(vocabulary),
    }


def _nearest_rank(sorted_values: list[int], percent: int) -> int:
    """The value at rank ceil(percent / 100 * n), in integers so 95% of 20 is rank 19."""
    if not sorted_values:
        return 0
    rank = max(1, -(-percent * len(sorted_values) // 100))
    return sorted_values[rank - 1]


def _label_key(label: str) -> tuple[int, int, str]:
    # Integer labels in numeric order ("2" before "10"), then the others alphabetically.
    try:
        return (0, int(label), label)
    except ValueError:
        return (1, 0, label)
