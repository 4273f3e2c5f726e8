"""Shared data code: formats, readers, statistics, split and the splits' files (INPUT); templates, masking, packing,
the tokenized store and its cache (THINK). Used by the two data plugins and ``data/prepare_dataset.py``.

Nothing here imports torch at import time except ``collator``.
"""
