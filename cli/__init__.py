"""The `seqtrain` command line.

main.py       the root command group; registers every command below
common.py     the --url/--token/--json options, the API client, the database, the error exit
serve.py      running the service: up, api, worker, reconcile, migrate
accounts.py   users and tokens (talk to DATABASE_URL directly)
jobs.py       submit, retry, jobs, show, cancel, logs, predict, generate
watch.py      --wait and --follow: poll a job to its end, draw the API's progress
local.py      train --local: the service's trainer in this process, without the queue
datasets.py   datasets upload, list, show, delete
outputs.py    predict ID TEXT... or predict ID --dataset D --output FILE (queued, downloaded)
exports.py    export ID --output FILE: the job's bundle (weights, ONNX, a model card)
client.py     a small HTTP client for the API
services.py   the local Redis server and process management behind `seqtrain up`
logformat.py  SEQTRAIN_LOG_FORMAT=json logging for the API and the worker
"""
