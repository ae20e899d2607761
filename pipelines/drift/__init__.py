"""Drift statistics: compare a current window's binned distribution with a baseline's."""
