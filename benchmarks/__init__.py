"""Benchmarks of seqtools; ``python -m benchmarks`` runs them all (see run.py)."""
