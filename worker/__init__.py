"""The worker side: Celery consumes job ids; a supervisor runs each attempt's trainer.

celery_app.py  the Celery app (JSON only, prefetch 1, late acks) and its process hooks
tasks.py       seqtrain.run_job: claim the job, then supervise; a no-op when the claim fails
supervisor.py  runs the trainer as a child process: heartbeat, cancel, timeout, final status
trainer.py     the training loop (python -m worker.trainer --job-id N --attempt A)
data.py        dataset -> vocabulary, split, bucketed dynamically padded batches
"""
