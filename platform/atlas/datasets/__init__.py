"""Datasets: text tokenized once by a model's tokenizer into fixed-length sequences, reused by every run."""
