"""Fault suite: runs that are killed, resumed, or fed bad input."""
