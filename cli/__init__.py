"""The `seqtrain` command line: main.py (commands), client.py (a small HTTP client), services.py
(the local Redis server and process management behind `seqtrain up`)."""
