"""Reliability harnesses: crash consistency, concurrency and bad-input fuzzing.

The engines live here so that the pytest suites (``tests/test_crash.py``,
``tests/test_concurrency.py``, ``tests/test_bad_input.py``) and the figures
script (``bench/reliability.py``) run the same loops.
"""
