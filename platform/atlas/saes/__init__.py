"""SAEs and their dashboard runs: upload, checks, queueing and the worker-side run."""
