"""The benchmark suite: ``PYTHONPATH=$PWD python -m benchmarks`` (see benchmarks/suite.py)."""
