"""TSV, CSV and JSON Lines uploads -> rows {"text", "label"} for classification.

parsed = parse_delimited(data, delimiter="\\t", text_column="sentence", label_column="label")
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from shared import safejson
from shared.data.upload import DatasetFormatError, ParsedDataset, decode

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
