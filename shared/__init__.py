"""Code that both the API and the worker import; never imports either of them. Grouped by
domain; the modules at the top are what every process agrees on.

protocol.py  what processes agree on: exit codes, job statuses, attempt outcomes, Redis keys
             and channels, environment names, the trainer's failure type (torch-free)
registry.py  the names a spec may use: model types and tasks with their facts (torch-free)
settings.py  every setting, declared once: environment name, default, parser, description
spec.py      the job spec (pydantic): validation, defaults, descriptions, size limits
modelspec.py the spec's base section and its model section (sizes, pretrained, LoRA)
resourcespec.py the spec's resources section: devices, nodes, queue, priority, preemptible
limits.py    a user's limits (max priority, running, devices, queued) and what they refuse
auth.py      users and API tokens (hashed), principals and ownership
safejson.py  JSON from clients, refused past 64 levels of nesting before it is decoded
infra/       the infrastructure: SQL engine and sessions, ORM tables, artifact store, queue
jobs/        the job state machine, submission, queries, progress, placement, workers, nodes,
             scheduling (claim order, preemption, queue position)
data/        datasets: upload formats, the registry, tokenizers, examples and batches
zoo/         models: encoders, heads and each task's plug-in; checkpoints (safetensors)
hub/         pretrained base models: archive checks, catalog, registry, local cache
"""
