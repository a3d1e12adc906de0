"""The worker side: Celery consumes job ids; a supervisor runs each attempt's trainer.

celery_app.py  the Celery app (JSON only, prefetch 1, late acks) and its process hooks
tasks.py       seqtrain.run_job: claim the job, then supervise; a no-op when the claim fails
supervisor.py  runs the trainer as a child process: heartbeat, cancel, timeout, final status
forkserver/    the warm fork-server single-device trainers are forked from (client, server)
tbevents.py    TensorBoard event files of a job's scalars (tensorboardX's record writer)
trainer.py     the trainer process (python -m worker.trainer --job-id N --attempt A): exit codes
loop.py        the one training loop: setup, epochs, evaluation, best checkpoint, early stop
state.py       the loop's state (epoch, step, position, best, patience, RNG) as a state dict
optim.py       learning-rate schedule; backward, clipping and the fused AdamW step
distributed.py device choice, the DDP process group and its collectives
reporting.py   where results go: SQL (fenced, batched), Redis pub/sub, TensorBoard, the store
evaluation.py  the evaluation report: the best checkpoint over validation / test, rank 0 only
launch.py      the trainer's command: one process, or torchrun's agent with a rank per device
multinode.py   multi-node attempts: reserving the workers, following node 0
reconciler.py  requeues expired leases and re-enqueues queued jobs Redis lost
outputs/       job outputs (batch predictions, exports): the Celery-side supervisor, the child
               (python -m worker.outputs) and each kind's runner
agent.py       the worker's registration and heartbeat in the workers table
devices.py     the devices a worker offers (GPUs probed in a child process, or CPU processes)
procs.py       process helpers: dying with the parent, stopping a process group
"""
