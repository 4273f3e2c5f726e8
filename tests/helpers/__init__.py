"""Helpers shared by the tests in several folders (tests/ is on sys.path through its conftest)."""
