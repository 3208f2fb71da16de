"""Container names: Docker's rule for names users choose, and generated ``adjective_surname`` ones.

A container *name* is stored without Docker's leading ``/`` (the API shows ``"/web"``; requests
may send either). A name has at least two characters: ``[a-zA-Z0-9][a-zA-Z0-9_.-]+``. Generated
names pair an adjective with the surname of a scientist or engineer, as ``docker run`` does;
when a pair is taken, a digit is appended and another pair is drawn.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Final

from engine.errors import InvalidArgument, Unavailable

NAME_PATTERN: Final = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$"
_NAME: Final = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
_CHARS: Final = "[a-zA-Z0-9][a-zA-Z0-9_.-]"

ADJECTIVES: Final = tuple(
    """
    agile amazing bold brave bright busy calm careful cheerful clever cool curious daring
    determined eager elegant epic fervent festive focused friendly gallant gentle happy hopeful
    jolly keen kind lucid merry modest nifty noble optimistic patient peaceful quirky relaxed
    serene sharp silly steady stoic sweet tender trusting upbeat vibrant wizardly zealous
    """.split()  # noqa: SIM905 (a word list reads best as text)
)
SURNAMES: Final = tuple(
    """
    agnesi babbage bardeen bohr boole carson cerf curie darwin dijkstra einstein euclid euler
    faraday fermat feynman franklin galileo gauss goodall hamilton hawking hodgkin hopper
    hypatia johnson kepler knuth lamarr lamport leavitt lovelace maxwell meitner mendel newton
    noether pasteur pike ritchie rubin shannon somerville tesla thompson torvalds turing volta
    wozniak yalow
    """.split()  # noqa: SIM905 (a word list reads best as text)
)
ATTEMPTS: Final = 1000


def check_name(name: str) -> str:
    """*name* without one leading ``/``; InvalidArgument if it breaks Docker's name rule."""
    bare = name[1:] if name.startswith("/") else name
    if not _NAME.fullmatch(bare):
        raise InvalidArgument(f"Invalid container name ({name}), only {_CHARS} are allowed")
    return bare


def random_name(taken: Callable[[str], bool]) -> str:
    """A free ``adjective_surname`` name (``jolly_curie``; ``jolly_curie4`` after a clash)."""
    pick = random.SystemRandom()
    for attempt in range(ATTEMPTS):
        name = f"{pick.choice(ADJECTIVES)}_{pick.choice(SURNAMES)}"
        if attempt:
            # Like Docker, a digit after a clash; more digits once the space grows crowded.
            name += str(pick.randrange(10 ** (1 + attempt // 10)))
        if not taken(name):
            return name
    raise Unavailable(f"no free container name found in {ATTEMPTS} attempts")
