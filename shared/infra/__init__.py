"""The infrastructure every process talks to.

db.py       engine and session factory (SQLite pragmas, PostgreSQL pooling), affected rows
models.py   SQLAlchemy ORM tables: jobs, events, metrics, checkpoints, datasets, models,
            users, workers
output_tables.py  the tables of a trained job's results: reports, job outputs
sweep_tables.py   the tables of hyperparameter sweeps
storage.py  the artifact store (a local or shared directory), content hashes, atomic commits
queue.py    the small Celery client the API enqueues with (by task name, ids only)
"""
