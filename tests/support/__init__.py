"""Helpers the tests run or import that are not tests: worker processes, a private Postgres, subprocesses."""
