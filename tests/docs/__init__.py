"""Helpers of tests/test_docs.py: the code blocks of README.md and docs/, and running them."""
