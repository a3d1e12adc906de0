from pathlib import Path

import pytest

from shared.data.formats import (
    DatasetFormatError,
    ParsedDataset,
    decode,
    detect_scheme,
    entities,
    iob2_to_bioes,
    parse_conll,
    parse_delimited,
    parse_jsonl,
    parse_text,
    statistics,
    to_iob2,
)

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def tsv(data: bytes, **options: object) -> ParsedDataset:
    return parse_delimited(
        data, delimiter="\t", text_column="sentence", label_column="label", **options
    )


# --- decoding ----------------------------------------------------------------------------


def test_decode_strips_utf8_bom():
    assert decode(b"\xef\xbb\xbfsentence\tlabel\n") == "sentence\tlabel\n"
    assert tsv(b"\xef\xbb\xbfsentence\tlabel\ngood\t1\n").rows == [{"text": "good", "label": "1"}]


def test_invalid_byte_names_line_offset_and_value():
    data = b"sentence\tlabel\nok\t1\ncaf\xe9\t0\n"
    with pytest.raises(DatasetFormatError) as caught:
        tsv(data)
    err = caught.value
    assert (err.field, err.line, err.byte_offset) == ("encoding", 3, data.index(b"\xe9"))
    assert str(err) == (
        "line 3, byte 23: invalid UTF-8 byte 0xe9 "
        "(declare the file's encoding, e.g. encoding=latin-1)"
    )


def test_declared_latin1_decodes():
    parsed = tsv(b"sentence\tlabel\ncaf\xe9 cr\xe8me\t1\n", encoding="latin-1")
    assert parsed.rows == [{"text": "café crème", "label": "1"}]


def test_utf16_file_read_as_utf8_suggests_utf16():
    data = "text\n".encode("utf-16")
    with pytest.raises(DatasetFormatError, match="encoding=utf-16") as caught:
        decode(data)
    assert (caught.value.line, caught.value.byte_offset) == (1, 0)
    assert decode(data, "utf-16") == "text\n"


@pytest.mark.parametrize("encoding", ["klingon-8", "base64"])
def test_unknown_encoding(encoding):
    with pytest.raises(DatasetFormatError, match=f"unknown text encoding '{encoding}'") as caught:
        decode(b"text", encoding)
    assert caught.value.field == "encoding"


@pytest.mark.parametrize(
    "parse",
    [
        tsv,
        lambda data: parse_jsonl(data, text_field="text"),
        parse_text,
        parse_conll,
    ],
)
@pytest.mark.parametrize("data", [b"", b" \n\t\r\n", b"\xef\xbb\xbf\n"])
def test_empty_file(parse, data):
    with pytest.raises(DatasetFormatError, match="^file is empty") as caught:
        parse(data)
    assert caught.value.field == "file" and caught.value.line is None


def test_error_without_location_reads_as_its_message():
    err = DatasetFormatError("file is empty", field="file")
    assert str(err) == "file is empty" and isinstance(err, ValueError)
    assert str(DatasetFormatError("bad", line=4)) == "line 4: bad"


# --- TSV and CSV -------------------------------------------------------------------------


def test_tsv_keeps_quotes_and_strips_the_space_before_the_tab():
    data = b"sentence\tlabel\na `` gripping '' film \t1\nit \"works\" , sort of \t0\n"
    parsed = tsv(data)
    assert parsed.format == "tsv" and parsed.columns == ["text", "label"]
    assert parsed.rows == [
        {"text": "a `` gripping '' film", "label": "1"},
        {"text": 'it "works" , sort of', "label": "0"},
    ]


def test_csv_with_quotes_crlf_blank_lines_and_extra_columns():
    data = b'id,text,label\r\n1,"good, really",pos\r\n\r\n2, "said ""no""" ,neg\r\n'
    parsed = parse_delimited(data, delimiter=",", text_column="text", label_column="label")
    assert parsed.format == "csv"
    assert parsed.rows == [
        {"text": "good, really", "label": "pos"},
        {"text": 'said "no"', "label": "neg"},
    ]


def test_text_only_without_label_column():
    parsed = parse_delimited(b"text\nhello there\n", delimiter=",", text_column="text")
    assert parsed.columns == ["text"] and parsed.rows == [{"text": "hello there"}]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"text_column": "text", "label_column": "label"}, "text_column"),
        ({"text_column": "sentence", "label_column": "polarity"}, "label_column"),
    ],
)
def test_missing_column_lists_the_columns(options, field):
    with pytest.raises(DatasetFormatError) as caught:
        parse_delimited(b"sentence\tlabel\ngood\t1\n", delimiter="\t", **options)
    missing = options[field]
    assert caught.value.field == field and caught.value.line == 1
    assert (
        caught.value.message == f"no column '{missing}' in the header; columns: 'sentence', 'label'"
    )


def test_wrong_delimiter_is_suggested():
    with pytest.raises(DatasetFormatError, match="is the file comma-separated") as caught:
        tsv(b"sentence,label\ngood,1\n")
    assert caught.value.field == "text_column"


def test_duplicate_column():
    with pytest.raises(DatasetFormatError, match="column 'label' appears 2 times") as caught:
        tsv(b"sentence\tlabel\tlabel\ngood\t1\t1\n")
    assert caught.value.field == "label_column"


def test_ragged_row_names_line_and_field_counts():
    data = b"sentence\tlabel\ngood\t1\n\nbad\tfilm\t0\n"
    with pytest.raises(DatasetFormatError) as caught:
        tsv(data)
    assert caught.value.line == 4 and caught.value.field == "file"
    assert "expected 2 fields, as in the header, found 3" in str(caught.value)
    assert str(caught.value).startswith("line 4: ")


def test_unclosed_csv_quote_is_a_ragged_row_at_its_first_line():
    data = b'text,label\n"good,1\nbad,0\n'
    with pytest.raises(DatasetFormatError, match="found 1 .*every quote closed") as caught:
        parse_delimited(data, delimiter=",", text_column="text", label_column="label")
    assert caught.value.line == 2


def test_empty_text_cell_names_line():
    with pytest.raises(DatasetFormatError) as caught:
        tsv(b"sentence\tlabel\ngood\t1\n  \t0\n")
    assert (caught.value.line, caught.value.field) == (3, "text_column")
    assert caught.value.message == "empty text in column 'sentence'"


def test_empty_label_cell_names_line():
    with pytest.raises(DatasetFormatError, match="empty label in column 'label'") as caught:
        tsv(b"sentence\tlabel\ngood\t\n")
    assert (caught.value.line, caught.value.field) == (2, "label_column")


def test_too_many_classes_names_count_and_limit():
    data = b"sentence\tlabel\n" + b"".join(b"s%d\t%d\n" % (i, i) for i in range(5))
    assert len(tsv(data, max_classes=5).rows) == 5
    with pytest.raises(DatasetFormatError) as caught:
        tsv(data, max_classes=4)
    assert caught.value.field == "label_column"
    assert "'label' has 5 distinct labels, more than the limit of 4" in caught.value.message


def test_header_without_rows():
    with pytest.raises(DatasetFormatError, match="header but no rows"):
        tsv(b"sentence\tlabel\n\n")


def test_csv_field_over_the_size_limit_is_a_located_error():
    data = b"text\nshort\n" + b"x" * 200_000 + b"\n"
    with pytest.raises(DatasetFormatError, match="field larger than field limit") as caught:
        parse_delimited(data, delimiter=",", text_column="text")
    assert caught.value.line == 3


def test_unsupported_delimiter():
    with pytest.raises(DatasetFormatError, match="tab or a comma") as caught:
        parse_delimited(b"a;b\n", delimiter=";", text_column="a")
    assert caught.value.field == "delimiter"


# --- JSON Lines --------------------------------------------------------------------------


def test_jsonl_int_and_bool_labels_become_strings():
    data = (
        b'{"text": "good", "label": 1}\n\n'
        b'{"text": "bad", "label": 0}\n'
        b'{"text": "ok", "label": true}\n'
    )
    parsed = parse_jsonl(data, text_field="text", label_field="label")
    assert parsed.format == "jsonl" and parsed.columns == ["text", "label"]
    assert [row["label"] for row in parsed.rows] == ["1", "0", "true"]
    assert statistics(parsed)["label_counts"] == {"0": 1, "1": 1, "true": 1}


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        (b'{"text": "bad", ', "file", "invalid JSON: Expecting property name"),
        (b'["bad", 0]', "file", "expected a JSON object, found an array"),
        (b'{"label": 0}', "text_field", "no field 'text'; fields: 'label'"),
        (
            b'{"text": 3, "label": 0}',
            "text_field",
            "'text' must be a non-empty string, found the number 3",
        ),
        (b'{"text": " ", "label": 0}', "text_field", "found an empty string"),
        (b'{"text": "bad"}', "label_field", "no field 'label'; fields: 'text'"),
        (b'{"text": "bad", "label": 0.5}', "label_field", "found the number 0.5"),
        (b'{"text": "bad", "label": null}', "label_field", "found null"),
    ],
)
def test_jsonl_errors_name_line_and_problem(line, field, message):
    data = b'{"text": "good", "label": 1}\n\n' + line + b"\n"
    with pytest.raises(DatasetFormatError, match=message) as caught:
        parse_jsonl(data, text_field="text", label_field="label")
    assert (caught.value.line, caught.value.field) == (3, field)


def test_jsonl_too_many_classes():
    data = b'{"t": "a", "y": "x"}\n{"t": "b", "y": "z"}\n'
    with pytest.raises(DatasetFormatError, match="'y' has 2 distinct labels") as caught:
        parse_jsonl(data, text_field="t", label_field="y", max_classes=1)
    assert caught.value.field == "label_field"


# --- seq2seq pairs -----------------------------------------------------------------------

PAIRS_TSV = b"id\tde\ten\n1\t Guten Morgen. \tGood morning.\n\n2\tWie geht's?\tHow are you?\n"


def pairs_tsv(data: bytes) -> ParsedDataset:
    return parse_delimited(data, delimiter="\t", source_column="de", target_column="en")


def pairs_jsonl(data: bytes) -> ParsedDataset:
    return parse_jsonl(data, source_field="de", target_field="en")


def test_tsv_pairs_keep_the_text_as_written():
    parsed = pairs_tsv(PAIRS_TSV)
    assert parsed.format == "tsv" and parsed.columns == ["source", "target"]
    assert parsed.rows == [
        {"source": "Guten Morgen.", "target": "Good morning."},  # stripped, case kept
        {"source": "Wie geht's?", "target": "How are you?"},
    ]


def test_csv_pairs_with_quoted_commas():
    data = b'en,fr\n"Yes, sir.",  "Oui, monsieur."\r\nNo.,Non.\r\n'
    parsed = parse_delimited(data, delimiter=",", source_column="en", target_column="fr")
    assert parsed.format == "csv"
    assert parsed.rows == [
        {"source": "Yes, sir.", "target": "Oui, monsieur."},
        {"source": "No.", "target": "Non."},
    ]


def test_jsonl_pairs_keep_tabs_and_spaces():
    data = b'{"de": "Ein\\tHund ", "en": "A dog", "id": 1}\n\n{"en": "Cats.", "de": "Katzen."}\n'
    parsed = pairs_jsonl(data)
    assert parsed.format == "jsonl" and parsed.columns == ["source", "target"]
    assert parsed.rows == [
        {"source": "Ein\tHund ", "target": "A dog"},
        {"source": "Katzen.", "target": "Cats."},
    ]


@pytest.mark.parametrize(
    ("data", "line", "field", "message"),
    [
        (b"de\ten\na\tb\nc\t \n", 3, "target_column", "empty target in column 'en'"),
        (b"de\ten\na\tb\n\t d\n", 3, "source_column", "empty source in column 'de'"),
        (
            b"source\ten\na\tb\n",
            1,
            "source_column",
            "no column 'de' in the header; columns: 'source', 'en'",
        ),
        (
            b"de\tenglish\na\tb\n",
            1,
            "target_column",
            "no column 'en' in the header; columns: 'de', 'english'",
        ),
        (b"de,en\na,b\n", 1, "source_column", "is the file comma-separated"),
        (b"de\ten\na\tb\tc\n", 2, "file", "expected 2 fields"),
    ],
)
def test_tsv_pair_errors_name_line_and_field(data, line, field, message):
    with pytest.raises(DatasetFormatError, match=message) as caught:
        pairs_tsv(data)
    assert (caught.value.line, caught.value.field) == (line, field)


@pytest.mark.parametrize(
    ("record", "field", "message"),
    [
        (b'["Hallo", "Hello"]', "file", "expected a JSON object, found an array"),
        (b'"Hallo"', "file", "expected a JSON object, found a string"),
        (b'{"de": "Hallo"}', "target_column", "no field 'en'; fields: 'de'"),
        (
            b'{"german": "Hallo", "en": "Hi"}',
            "source_column",
            "no field 'de'; fields: 'german', 'en'",
        ),
        (
            b'{"de": "Hallo", "en": ""}',
            "target_column",
            "'en' must be a non-empty string, found an empty string",
        ),
        (b'{"de": " ", "en": "Hi"}', "source_column", "found an empty string"),
        (b'{"de": 3, "en": "three"}', "source_column", "found the number 3"),
        (b'{"de": "Hallo", "en": null}', "target_column", "found null"),
        (b'{"de": "Hallo", "en": ["Hi"]}', "target_column", "found an array"),
    ],
)
def test_jsonl_pair_errors_name_line_and_field(record, field, message):
    data = b'{"de": "Guten Tag", "en": "Good day"}\n\n' + record + b"\n"
    with pytest.raises(DatasetFormatError, match=message) as caught:
        pairs_jsonl(data)
    assert (caught.value.line, caught.value.field) == (3, field)
    assert str(caught.value).startswith("line 3: ")


@pytest.mark.parametrize(
    "columns",
    [
        {"text_column": "de", "source_column": "de", "target_column": "en"},
        {"label_column": "de", "source_column": "de", "target_column": "en"},
        {"source_column": "de"},
        {"target_column": "en"},
        {},
    ],
)
def test_readers_need_a_text_or_a_pair(columns):
    with pytest.raises(DatasetFormatError, match="or source_column and target_column"):
        parse_delimited(PAIRS_TSV, delimiter="\t", **columns)
    fields = {name.replace("_column", "_field"): value for name, value in columns.items()}
    with pytest.raises(DatasetFormatError, match="or source_column and target_column"):
        parse_jsonl(b'{"de": "a", "en": "b"}\n', **fields)


# --- plain text --------------------------------------------------------------------------


def test_text_keeps_the_whole_text_and_counts_lines():
    parsed = parse_text(b"To be,\r\nor not\r\n\r\nto be.\n")
    assert parsed.text == "To be,\nor not\n\nto be.\n"
    assert parsed.rows == [{"text": "To be,"}, {"text": "or not"}, {"text": "to be."}]
    stats = statistics(parsed)
    assert stats["rows"] == 3 and stats["text_length"] == 22
    assert stats["characters"] == len(set("To be,\nor not\n\nto be.\n")) == 11
    assert stats["vocabulary_size"] == 6  # To be, or not to be. (case and punctuation count)


# --- CoNLL -------------------------------------------------------------------------------

CONLL = b"""-DOCSTART- -X- O O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O

-DOCSTART- -X- O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
and CC O O
Paul NNP I-NP B-PER
"""


def test_conll_sentences_skip_docstart_and_convert_iob1():
    parsed = parse_conll(CONLL)
    assert parsed.format == "conll" and parsed.scheme == "IOB1"
    assert parsed.rows == [
        {"tokens": ["EU", "rejects", "German", "call"], "tags": ["B-ORG", "O", "B-MISC", "O"]},
        {
            "tokens": ["Peter", "Blackburn", "and", "Paul"],
            "tags": ["B-PER", "I-PER", "O", "B-PER"],
        },
    ]


def test_conll_chooses_columns_and_declared_scheme():
    data = b"1\tB-PER\tJohn\n2\tO\tran\n"
    parsed = parse_conll(data, token_column=2, tag_column=1, scheme="IOB2")
    assert parsed.rows == [{"tokens": ["John", "ran"], "tags": ["B-PER", "O"]}]


@pytest.mark.parametrize(
    ("tags", "scheme"),
    [
        (["B-PER", "I-PER", "O", "I-LOC"], "IOB1"),
        (["B-PER", "I-PER", "I-LOC"], "IOB1"),
        (["B-PER", "I-PER", "O", "B-LOC"], "IOB2"),
        (["O", "O"], "IOB2"),
        (["I-PER", "E-PER", "S-LOC"], "BIOES"),
    ],
)
def test_scheme_detection(tags, scheme):
    assert detect_scheme([["O"], tags]) == scheme
    data = "".join(f"w{i} {tag}\n" for i, tag in enumerate(tags)).encode()
    assert parse_conll(data).scheme == scheme


@pytest.mark.parametrize(
    ("data", "column", "line"),
    [
        (b"EU B-ORG\nrejects O\n", "tag_column 2", 1),
        (b"EU x B-ORG\nrejects O\n\nGerman\n", "tag_column 2", 2),
    ],
)
def test_conll_tag_column_out_of_range(data, column, line):
    with pytest.raises(DatasetFormatError, match=f"{column} is out of range") as caught:
        parse_conll(data, tag_column=2)
    assert (caught.value.line, caught.value.field) == (line, "tag_column")


def test_conll_token_column_out_of_range():
    with pytest.raises(DatasetFormatError, match="token_column -3 is out of range") as caught:
        parse_conll(b"EU B-ORG\n", token_column=-3)
    assert caught.value.field == "token_column"


def test_conll_line_with_fewer_columns():
    with pytest.raises(DatasetFormatError) as caught:
        parse_conll(b"EU NNP B-ORG\n\nrejects O\n")
    assert (caught.value.line, caught.value.field) == (3, "file")
    assert caught.value.message == "expected 3 columns, as on line 1, found 2"


def test_conll_token_and_tag_in_the_same_column():
    with pytest.raises(DatasetFormatError, match="same column") as caught:
        parse_conll(b"EU\n")
    assert caught.value.field == "tag_column"


@pytest.mark.parametrize("tag", ["X-PER", "B-", "PER", "b-PER", "B_PER"])
def test_conll_invalid_tag_names_line(tag):
    data = f"-DOCSTART- O\n\nEU B-ORG\nrejects {tag}\n".encode()
    with pytest.raises(DatasetFormatError, match=f"invalid tag '{tag}'") as caught:
        parse_conll(data)
    assert (caught.value.line, caught.value.field) == (4, "tag_column")


def test_conll_bioes_tag_in_declared_iob2_names_line():
    data = b"EU B-ORG\n\nPeter B-PER\nBlackburn E-PER\n"
    with pytest.raises(DatasetFormatError, match="'E-PER' is not IOB2") as caught:
        parse_conll(data, scheme="iob2")
    assert (caught.value.line, caught.value.field) == (4, "scheme")
    assert parse_conll(data).rows[1]["tags"] == ["B-PER", "I-PER"]


def test_conll_unknown_scheme_and_no_sentences():
    with pytest.raises(DatasetFormatError, match="unknown tag scheme 'bilou'") as caught:
        parse_conll(b"EU B-ORG\n", scheme="bilou")
    assert caught.value.field == "scheme"
    with pytest.raises(DatasetFormatError, match="no sentences"):
        parse_conll(b"-DOCSTART- -X- O O\n\n-DOCSTART- -X- O O\n")


# --- tag schemes -------------------------------------------------------------------------


def test_iob1_to_iob2():
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "I-ORG"]
    assert to_iob2(iob1, "iob1") == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "I-ORG"]


def test_bioes_to_iob2():
    bioes = ["S-PER", "B-LOC", "I-LOC", "E-LOC", "O", "B-ORG", "E-ORG", "S-ORG"]
    assert to_iob2(bioes, "BIOES") == [
        "B-PER",
        "B-LOC",
        "I-LOC",
        "I-LOC",
        "O",
        "B-ORG",
        "I-ORG",
        "B-ORG",
    ]


@pytest.mark.parametrize(
    "iob2",
    [
        ["B-PER", "I-PER", "I-PER", "B-PER", "O", "B-LOC", "O", "B-ORG", "I-ORG", "B-MISC"],
        ["B-LOC"],
        ["O", "O"],
        [],
    ],
)
def test_iob2_to_bioes_and_back(iob2):
    bioes = iob2_to_bioes(iob2)
    assert to_iob2(bioes, "bioes") == iob2
    assert entities(to_iob2(bioes, "bioes")) == entities(iob2)


def test_iob2_to_bioes_values():
    assert iob2_to_bioes(["B-PER", "I-PER", "I-PER", "B-LOC", "O", "I-ORG"]) == [
        "B-PER", "I-PER", "E-PER", "S-LOC", "O", "S-ORG"
    ]  # fmt: skip


def test_entities_the_conll_way():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-ORG", "B-ORG", "I-ORG", "I-ORG"]
    assert entities(tags) == [("PER", 0, 2), ("LOC", 3, 4), ("ORG", 4, 5), ("ORG", 5, 8)]
    assert entities(["O", "O"]) == [] and entities([]) == []


@pytest.mark.parametrize(
    ("tags", "scheme"),
    [(["B-PER", "S-PER"], "IOB2"), (["B-"], "BIOES"), (["X-PER"], "IOB1"), (["B-PER"], "auto")],
)
def test_to_iob2_rejects_tags_outside_the_scheme(tags, scheme):
    with pytest.raises(DatasetFormatError):
        to_iob2(tags, scheme)


# --- statistics --------------------------------------------------------------------------


def test_classification_statistics_by_hand():
    lengths = [1, 2, 2, 3, 4, 5, 6, 7, 8, 10]  # tokens in each of the 10 rows
    rows = "".join(
        f"{' '.join(['w'] * (n - 1) + [f'x{n}'])}\t{n % 3 * 5}\n" for n in lengths
    )  # labels: 5, 10, 10, 0, 5, 10, 0, 5, 10, 5
    stats = statistics(tsv(("sentence\tlabel\n" + rows).encode()))
    assert stats == {
        "rows": 10,
        # nearest rank: p50 is the 5th of 10 values, p95 the 10th (ceil(9.5))
        "tokens_per_row": {"p50": 4, "p95": 10, "max": 10, "mean": 4.8},
        "vocabulary_size": 10,  # "w" and x1 to x8, x10
        "label_counts": {"0": 2, "5": 4, "10": 4},  # numeric order, not "0", "10", "5"
        "num_labels": 3,
    }


def test_conll_statistics_by_hand():
    stats = statistics(parse_conll(CONLL))
    assert stats == {
        "rows": 2,
        "tokens_per_row": {"p50": 4, "p95": 4, "max": 4, "mean": 4.0},
        "vocabulary_size": 8,
        "sentences": 2,
        "tokens": 8,
        "entities": {"MISC": 1, "ORG": 1, "PER": 2},
        "tag_counts": {"B-MISC": 1, "B-ORG": 1, "B-PER": 2, "I-PER": 1, "O": 3},
    }


def test_pair_statistics_by_hand():
    pairs = [  # (source tokens, target tokens): (1, 2), (2, 2), (3, 4), (4, 3), (10, 13)
        ("Hallo", "Hello there"),
        ("Guten Tag", "Good day"),
        ("Wie geht es", "How are you doing"),
        ("Ich bin sehr müde", "I'm very tired"),
        (
            "eins zwei drei vier fünf sechs sieben acht neun zehn",
            " ".join(["one"] * 12 + ["Hallo"]),
        ),
    ]
    data = "de\ten\n" + "".join(f"{de}\t{en}\n" for de, en in pairs)
    stats = statistics(pairs_tsv(data.encode()))
    assert stats == {
        "rows": 5,
        "pairs": 5,
        # nearest rank of 5 values: p50 is the 3rd (ceil(2.5)), p95 the 5th (ceil(4.75))
        "source_tokens_per_row": {"p50": 3, "p95": 10, "max": 10, "mean": 4.0},
        "target_tokens_per_row": {"p50": 3, "p95": 13, "max": 13, "mean": 4.8},
        "source_vocabulary_size": 1 + 2 + 3 + 4 + 10,  # no token repeats
        "target_vocabulary_size": 2 + 2 + 4 + 3 + 1 + 1,  # "one" once; "Hallo" is new here
        "length_ratio": 1.2,  # 24 target tokens / 20 source tokens
    }


def test_pair_statistics_round_the_ratio_and_survive_no_rows():
    data = b'{"s": "a b c", "t": "x"}\n'
    stats = statistics(parse_jsonl(data, source_field="s", target_field="t"))
    assert stats["length_ratio"] == 0.33 and stats["pairs"] == 1
    empty = statistics(ParsedDataset("jsonl", [], ["source", "target"]))
    assert empty["pairs"] == 0 and empty["length_ratio"] == 0.0
    assert empty["source_tokens_per_row"] == {"p50": 0, "p95": 0, "max": 0, "mean": 0.0}


def test_statistics_of_no_rows():
    stats = statistics(ParsedDataset("csv", [], ["text"]))
    assert stats["rows"] == 0 and stats["tokens_per_row"]["p95"] == 0


# --- the real data sets ------------------------------------------------------------------


def dataset(relative: str) -> bytes:
    if not DATASETS.is_dir():
        pytest.skip(f"real data sets not present at {DATASETS}")
    return (DATASETS / relative).read_bytes()


def test_sst2():
    train = tsv(dataset("sst2/train.tsv"))
    stats = statistics(train)
    assert stats["rows"] == 67_349
    assert stats["label_counts"] == {"0": 29_780, "1": 37_569}
    assert all(row["text"] == row["text"].strip() for row in train.rows)
    assert len(tsv(dataset("sst2/dev.tsv")).rows) == 872


def test_conll2003():
    parsed = parse_conll(dataset("conll2003/train.txt"))
    stats = statistics(parsed)
    assert parsed.scheme == "IOB1"
    assert (stats["sentences"], stats["tokens"]) == (14_041, 203_621)
    assert set(stats["entities"]) == {"PER", "LOC", "ORG", "MISC"}
    assert all(count > 0 for count in stats["entities"].values())


def test_tinyshakespeare():
    parsed = parse_text(dataset("tinyshakespeare/input.txt"))
    assert parsed.text is not None and len(parsed.text) == 1_115_394
    assert statistics(parsed)["characters"] == 65


def test_multi30k_pairs():
    folder = DATASETS / "multi30k"
    if not folder.is_dir():
        pytest.skip(
            f"Multi30k is not present at {folder} (the shared data sets sit beside the checkout)"
        )
    parsed = parse_jsonl(
        (folder / "train.jsonl").read_bytes(), source_field="de", target_field="en"
    )
    stats = statistics(parsed)
    assert len(parsed.rows) == stats["rows"] == stats["pairs"] == 29_000
    assert parsed.rows[0] == {
        "source": "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
        "target": "Two young, White males are outside near many bushes.",
    }
    assert any("\t" in row["source"] for row in parsed.rows)  # one source holds a tab, kept
    assert 0.9 < stats["length_ratio"] < 1.3
