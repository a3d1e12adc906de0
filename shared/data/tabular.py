"""TSV, CSV and JSON Lines uploads -> rows {"text", "label"} for classification (or
{"text"} for language modelling), or {"source", "target"} pairs for seq2seq.

parsed = parse_delimited(data, delimiter="\\t", text_column="sentence", label_column="label")
pairs = parse_jsonl(data, source_field="de", target_field="en")
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

from shared import safejson
from shared.data.upload import DatasetFormatError, ParsedDataset, decode

# --- TSV and CSV -------------------------------------------------------------------------


def parse_delimited(
    data: bytes,
    *,
    delimiter: str,
    text_column: str | None = None,
    label_column: str | None = None,
    source_column: str | None = None,
    target_column: str | None = None,
    encoding: str = "utf-8",
    max_classes: int = 1000,
) -> ParsedDataset:
    """Rows of a TSV (delimiter "\\t") or CSV (",") file with a header: {"text", "label"}
    (`text_column`, and `label_column` if given) or {"source", "target"} (`source_column`
    and `target_column`, for seq2seq).

    Cells are stripped of surrounding whitespace (SST-2 has a space before each tab, CSV
    files often one after each comma) and otherwise kept as written; blank lines are
    skipped. Every row needs as many fields as the header and a non-empty cell in each
    selected column; at most `max_classes` distinct labels.
    """
    if delimiter not in ("\t", ","):
        raise DatasetFormatError(
            f"delimiter must be a tab or a comma, not {delimiter!r}", field="delimiter"
        )
    selected = _selected(text_column, label_column, source_column, target_column)
    records = _csv_records(decode(data, encoding), delimiter)
    header_line, header = next(records)  # decode() refuses a file without a non-blank line
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


def _selected(
    text: str | None, label: str | None, source: str | None, target: str | None
) -> dict[str, str]:
    """Row key -> the file's column (or JSON field): a text (and a label), or a pair."""
    if source is not None and target is not None and text is None and label is None:
        return {"source": source, "target": target}
    if text is not None and source is None and target is None:
        return {"text": text} if label is None else {"text": text, "label": label}
    raise DatasetFormatError(
        "give text_column (and label_column), or source_column and target_column",
        field="text_column",
    )


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
    text_field: str | None = None,
    label_field: str | None = None,
    source_field: str | None = None,
    target_field: str | None = None,
    encoding: str = "utf-8",
    max_classes: int = 1000,
) -> ParsedDataset:
    """Rows of a JSON Lines file (one JSON object a line, blank lines skipped): {"text",
    "label"} (`text_field`, and `label_field` if given) or {"source", "target"}
    (`source_field` and `target_field`, for seq2seq).

    A text, source or target must be a non-empty string, kept exactly as it is (a tab
    inside is fine). A label may be a string, an integer or a boolean and is stored as a
    string: 1 -> "1", true -> "true" (as the file spells it).
    """
    selected = _selected(text_field, label_field, source_field, target_field)
    rows = []
    for line, record_text in enumerate(decode(data, encoding).split("\n"), start=1):
        if not record_text.strip():
            continue
        record = _json_object(record_text, line)
        rows.append({key: _JSON_VALUES[key](record, name, line) for key, name in selected.items()})
    if label_field is not None:
        _check_classes(rows, max_classes, f"field {label_field!r}", "label_field")
    return ParsedDataset("jsonl", rows, list(selected))


def _json_object(source: str, line: int) -> dict[str, Any]:
    try:
        value = safejson.loads(source)
    except safejson.JsonTooDeep as err:
        raise DatasetFormatError(f"the JSON is {err}", field="file", line=line) from None
    except json.JSONDecodeError as err:
        message = f"invalid JSON: {err.msg} at column {err.colno} (JSON Lines: one object a line)"
        raise DatasetFormatError(message, field="file", line=line) from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        message = f"invalid JSON: {err} (JSON Lines: one object a line)"
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


def _json_string(record: dict[str, Any], name: str, line: int, field: str) -> str:
    value = _json_field(record, name, field, line)
    if isinstance(value, str) and value.strip():
        return value
    message = f"field {name!r} must be a non-empty string, found {_json_kind(value)}"
    raise DatasetFormatError(message, field=field, line=line)


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


# Row key -> how a JSON Lines record's value becomes the row's (`field`: the option to fix;
# the pair's are named after the upload options, source_column and target_column).
_JSON_VALUES: dict[str, Callable[[dict[str, Any], str, int], str]] = {
    "text": functools.partial(_json_string, field="text_field"),
    "label": _json_label,
    "source": functools.partial(_json_string, field="source_column"),
    "target": functools.partial(_json_string, field="target_column"),
}


def _json_kind(value: Any) -> str:
    """What a JSON value is, in words, for error messages."""
    if isinstance(value, str):
        return "a string" if value.strip() else "an empty string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return f"the number {value}"
    return "an array" if isinstance(value, list) else "an object"
