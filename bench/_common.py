"""Helpers for the bench scripts: the machine description printed beside every figure."""

import statistics


def machine() -> str:
    from modelyard.machine import describe_machine

    return describe_machine()


def median(xs):
    return statistics.median(xs)


def spread(xs) -> str:
    return f"min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)}"
