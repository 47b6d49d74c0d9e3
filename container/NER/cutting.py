"""The one rule for cutting a request's work: how much one unit of it may hold.

A unit is a merged nlp.pipe call (batcher.py), a fan-out part (fanout.py) or a group of
a JSON Lines body (stream.py). Each holds consecutive texts while their characters stay
within the limit's `characters` and their number within its `texts`; the first text
always goes in, and a text longer than the unit was cut into pieces of at most that many
characters first (pieces.py, to `Limit.characters` as well), so no unit is over its
limit but for a piece a user's MODEL_SERVER_CHUNK_CHARACTERS made longer.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from tuning import MAX_TEXTS_PER_CALL

T = TypeVar("T")


@dataclass(frozen=True)
class Limit:
    """What one unit may hold."""

    characters: int
    texts: int = MAX_TEXTS_PER_CALL

    def admits(self, characters: int, texts: int, length: int) -> bool:
        """Whether a text of `length` characters may join a unit that holds `texts` texts
        of `characters` characters so far."""
        return texts == 0 or (characters + length <= self.characters and texts < self.texts)

    def fits(self, characters: int, texts: int) -> bool:
        """Whether that much work is one unit."""
        return characters <= self.characters and texts <= self.texts


def groups(items: Iterable[T], limit: Limit, length: Callable[[T], int] = len) -> Iterator[list[T]]:  # type: ignore[assignment]
    """Consecutive items in lists that the limit admits, length(item) characters each."""
    group: list[T] = []
    characters = 0
    for item in items:
        n = length(item)
        if not limit.admits(characters, len(group), n):
            yield group
            group, characters = [], 0
        group.append(item)
        characters += n
    if group:
        yield group
