"""seqtrain: run the service, submit and watch jobs.

seqtrain up                          API + worker + Redis + SQLite, no configuration
seqtrain submit examples/quickstart.yaml --wait | --follow
seqtrain jobs | show ID | logs ID [-f] | cancel ID | retry ID
seqtrain predict ID TEXT... | predict ID --dataset D --output FILE   (a whole dataset, queued)
seqtrain generate ID --prompt P | translate ID TEXT... [--beam-size N]   (LM, seq2seq)
seqtrain export ID --output FILE [--no-onnx]   (weights, tokenizer, ONNX, model card; queued)
seqtrain models upload DIR | list | show ID | delete ID | share ID
seqtrain sweep submit FILE [--wait] | sweeps list | show ID | cancel ID   (hyperparameter sweeps)
seqtrain api | worker | migrate      the parts one by one (what docker compose runs)
"""

from __future__ import annotations

import click

from cli import accounts, datasets, exports, jobs, local, models, outputs, serve, sweeps


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
    outputs.predict,
    exports.export,
    jobs.generate,
    jobs.translate,
    local.train_local,
    datasets.datasets,
    models.models,
    sweeps.sweeps,
    sweeps.sweep,
):
    main.add_command(command)


if __name__ == "__main__":
    main()
