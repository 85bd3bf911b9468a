"""Tasks to register with ``cognopt serve --task NAME=cognopt_ray.examples.tasks:FUNCTION``.

Each one checks its input, so a REST caller cannot make it run for hours.

Example:
    >>> count_primes(100)
    25
    >>> word_count("a b a")
    {'a': 2, 'b': 1}
"""

from __future__ import annotations

from collections import Counter

#: The largest ``n`` :func:`count_primes` takes (a sieve of this size runs in about a second).
MAX_N = 10_000_000
#: The longest text :func:`word_count` takes, in characters.
MAX_TEXT = 10_000_000


def count_primes(n: int) -> int:
    """How many primes are below ``n`` (a sieve of Eratosthenes: CPU-bound, memory ``n`` bytes)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_N:
        raise ValueError(f"n must be an integer in [0, {MAX_N}], got {n!r}")
    if n < 3:
        return 0
    sieve = bytearray([1]) * n
    sieve[0] = sieve[1] = 0
    for i in range(2, int(n**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, n, i)))
    return sum(sieve)


def word_count(text: str) -> dict[str, int]:
    """How often each whitespace-separated word occurs in ``text``."""
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise ValueError(f"text must be a string of at most {MAX_TEXT} characters")
    return dict(Counter(text.split()))


__all__ = ["MAX_N", "MAX_TEXT", "count_primes", "word_count"]
