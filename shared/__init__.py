"""Code that both the API and the worker import; never imports either of them.

settings.py  every setting, read from the environment, with its default
auth.py      users and API tokens (hashed), principals and ownership
spec.py      the job spec (pydantic): validation, defaults, descriptions, size limits
models.py    SQLAlchemy ORM tables: jobs, job_events, metrics, checkpoints
db.py        engine and session factory (SQLite pragmas, PostgreSQL pooling)
jobs.py      job state machine: create, claim, fenced writes, finish, cancel, queries
queue.py     the small Celery client the API enqueues with (by task name, ids only)
storage.py   artifact store (a local or shared directory), content hashes
statecodec.py  nested state dicts <-> safetensors tensors + JSON (no pickle anywhere)
text.py      word tokenizer and vocabulary (pad and unknown ids reserved)
tokenization.py  word / char / BPE / WordPiece tokenizers behind one JSON-serializable interface
datasets.py  dataset registry: uploads, built-in datasets, references from specs
builtin_data.py  generated built-in datasets (plain text, CoNLL)
dataset_formats.py  uploaded TSV/CSV/JSONL/text/CoNLL files -> rows, statistics, precise errors
checkpoints.py  one safetensors file per checkpoint: save / load (no pickle)
inference.py  predictions and generation from a checkpoint (imports torch; loaded lazily)
tagging_metrics.py  entity-level precision / recall / F1, the CoNLL way
zoo/         model registry: encoders per architecture, heads per task, one forward contract
"""
