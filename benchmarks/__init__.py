"""cwtx beside its peers: ``python benchmarks/run.py`` (docs/performance.md)."""
