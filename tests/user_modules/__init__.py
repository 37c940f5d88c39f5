"""Tiny user modules that the tests collect. Each is imported as ``tests.user_modules.<name>``.

Several hold mistakes on purpose; line numbers in them are asserted by the tests, so append
rather than insert when editing one.
"""
