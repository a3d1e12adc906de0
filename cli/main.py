"""seqtrain: run the service, submit and watch jobs.

seqtrain up                          API + worker + Redis + SQLite, no configuration
seqtrain submit examples/quickstart.yaml --wait | --follow
seqtrain jobs | show ID | logs ID [-f] | cancel ID | retry ID
seqtrain models upload DIR | list | show ID | delete ID | share ID
seqtrain api | worker | migrate      the parts one by one (what docker compose runs)
"""

from __future__ import annotations

import click

from cli import accounts, datasets, jobs, local, models, serve


@click.group()
def main() -> None:
    """Seqtrain: a queue-driven training service for PyTorch sequence models."""


for command in (
    serve.migrate,
    serve.api,
    serve.worker,
    serve.reconcile,
    serve.up,
    accounts.users,
    accounts.tokens,
    accounts.sessions,
    jobs.submit,
    jobs.retry,
    jobs.logs,
    jobs.list_jobs,
    jobs.show,
    jobs.cancel,
    jobs.predict,
    jobs.generate,
    local.train_local,
    datasets.datasets,
    models.models,
):
    main.add_command(command)


if __name__ == "__main__":
    main()
