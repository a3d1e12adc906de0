"""An uploaded file's text, the plain-text reader, the parsed dataset and the format error.

Every reader decodes through decode() and returns a ParsedDataset; every problem is a
DatasetFormatError. Standard library only: the API imports this without torch.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Any

from shared.protocol import TrainerFailure

_BOM = "\ufeff"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class DatasetFormatError(TrainerFailure, ValueError):
    """An uploaded dataset cannot be read: what is wrong, where, and which option to fix.

    `field` is the upload option the error concerns ("file", "encoding", "delimiter",
    "text_column", "label_column", "source_column", "target_column", "text_field",
    "label_field", "token_column", "tag_column", "scheme"); `line` is 1-based; `byte_offset` counts from the file's first
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
    rows: one dict per example, keyed by `columns` (see shared.data.formats).
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
