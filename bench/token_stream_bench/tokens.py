"""A token's text says when it was emitted, so whoever reads it knows its latency.

The endpoint writes each token as a 4-character word followed by a space (about the size
of a model's token in English): the wall-clock time it was emitted, in units of 100 µs,
modulo 36**4 (168 s), in base 36. A reader that completes the word at time `now` recovers
the emission as the latest such time not after `now`: no table to share between the
endpoint and the watcher processes, and the latency is computed where the token arrives,
into a histogram that merges across processes. The wall clock (`time.time_ns`), as
`builder_bench.latency.now_us` reads it, is one clock for every process of the machine.
A latency comes out 0-100 µs high (the stamp is rounded down), never low.

`TextTokens` reads the tokens out of the text pieces a reader receives: the pieces of an
item arrive in offset order (`TextPart.offset`), a replay of text already read is skipped,
and a token counts once its closing space has arrived (a piece may end inside a word).
"""

from __future__ import annotations

from dataclasses import dataclass

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
DIGITS = frozenset(ALPHABET)
WIDTH = 4
UNIT_US = 100
WRAP: int = len(ALPHABET) ** WIDTH  # stamps repeat every WRAP * UNIT_US = 168 s
SEPARATOR = " "


def token_word(now_us: int) -> str:
    """The word of a token emitted at `now_us` (wall clock, µs), without its separator."""
    units = (now_us // UNIT_US) % WRAP
    digits = []
    for _ in range(WIDTH):
        units, digit = divmod(units, len(ALPHABET))
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def word_latency_us(word: str, now_us: int) -> int | None:
    """How long ago the token `word` was emitted; None when the word is not a token."""
    if len(word) != WIDTH or not DIGITS.issuperset(word):
        return None
    now_units = now_us // UNIT_US
    age_units = (now_units - int(word, len(ALPHABET))) % WRAP
    return now_us - (now_units - age_units) * UNIT_US


@dataclass(kw_only=True)
class _ItemText:
    length: int = 0  # characters of the item's text read so far
    tail: str = ""  # the start of a word whose separator has not arrived
    words: int = 0  # complete words so far (the next one's index)


class TextTokens:
    """The tokens of the text items one reader receives, as they complete.

    `gaps`: pieces that started past the text read so far (text that never arrived: its
    tokens are missing); `foreign`: complete words that are not tokens (text the bench did
    not emit, or a token cut by a gap).
    """

    def __init__(self) -> None:
        self.items: dict[tuple[str, int], _ItemText] = {}
        self.gaps = 0
        self.foreign = 0

    def feed(
        self, execution_id: str, seq: int, offset: int, text: str, now_us: int
    ) -> list[tuple[int, int]]:
        """(index within the item, latency µs) of each token this piece completes."""
        item = self.items.setdefault((execution_id, seq), _ItemText())
        if offset > item.length:
            self.gaps += 1
            item.length, item.tail = offset, ""
        new = text[item.length - offset :]
        if not new:
            return []
        item.length += len(new)
        *words, item.tail = (item.tail + new).split(SEPARATOR)
        out = []
        for word in words:
            if not word:
                continue
            latency = word_latency_us(word, now_us)
            if latency is None:
                self.foreign += 1
            else:
                out.append((item.words, latency))
            item.words += 1
        return out
