"""Datasets: uploads and built-ins, their formats, tokenizers and the examples a job trains on.

datasets.py      dataset registry: uploads, built-in datasets, references from job specs
options.py       upload options (format, columns, encoding, scheme), checked together
builtin.py       generated built-in datasets, one per task, made deterministically in memory
formats.py       uploaded files -> rows and statistics; re-exports the readers below
upload.py        decoding, the plain-text reader, ParsedDataset and DatasetFormatError
tabular.py       TSV, CSV and JSON Lines readers (rows of text and label, or source and target)
conll.py         the CoNLL reader and tag schemes (IOB1, IOB2, BIOES), entities
text.py          word tokenizer and vocabulary (pad and unknown ids reserved)
tokenization.py  word / char / BPE / WordPiece tokenizers behind one interface
pretrained_tokens.py  a base model's own tokenizer behind the same interface
examples.py      datasets -> encoded examples -> padded, length-bucketed batches
pairs.py         seq2seq: a tokenizer per side (or one shared), encoded pairs and batches
"""
