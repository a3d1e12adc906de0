"""The hub: the local registry of pretrained base models (Hugging Face model directories,
safetensors only), validated without torch or transformers, stored once per content hash
and unpacked once per hash where they are used.

archive.py   a .zip or .tar.gz model directory: inspected and unpacked without trust
members.py   an archive's members walked once: safe paths, no links, sizes bounded (bombs)
weights.py   safetensors headers read without the library: dtypes, shapes, exact parameters
catalog.py   what the installed transformers knows (model types, task tables), read from its
             source with `ast`, never imported; which architectures can do which task
registry.py  uploads, listing, sharing, deletion, and references from job specs
cache.py     a model's archive unpacked once per hash into a local cache, safe across processes
"""
