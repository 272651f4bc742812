"""Tests of the worker side: a run's steps, its tasks, its retry policy."""
