"""The README's console sessions as data: the `$ ` commands of a section, each with the
answer the README shows, and a matcher that says whether a real answer is that one.

A section's fenced blocks hold commands (a line starting with `$ `, continued while a quote
is open or a line ends with `\\`) and, under each, what it prints. Example values in the
README are not typed literally by the matcher:

- a UUID the README shows is a *variable*: the first real answer that has one there binds
  it, and every later answer must show the same real value where the README shows the same
  example (two different examples never bind the same real value). A command that names an
  example by its first characters and `…` (`"app_id":"3ecec7ad-…"`) is run with the real
  value that example was bound to;
- a call id (`call_0_1_aae6f6d4`) is a variable the same way;
- a timestamp (`2026-12-03T13:15:51.014165Z`) stands for any timestamp;
- `…` inside a line stands for any characters; a line that starts with `…` for any number
  of lines (none included).

Everything else must be exactly what the README shows, line for line.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

ELLIPSIS = "…"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
CALL_ID = r"call_\d+_\d+_[0-9a-f]{8}"
TIMESTAMP = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z"
_VARIABLE = re.compile(f"({UUID}|{CALL_ID})")
_TOKEN = re.compile(f"({UUID}|{CALL_ID}|{TIMESTAMP}|{ELLIPSIS})")
# An example named by its first characters: `3ecec7ad-…`, `da04e4a9…`.
_ABBREVIATION = re.compile(r"([0-9a-f]{4,}(?:-[0-9a-f]*)?)" + ELLIPSIS)


@dataclass(frozen=True)
class Command:
    """One `$ ` command as the README writes it, and the answer it shows."""

    text: str
    expected: tuple[str, ...]
    block: int  # which fenced block of the section it is in, from 0
    comment: str = ""  # what follows `  #` on its first line


def section(markdown: str, heading: str) -> str:
    """The text of the `## heading` section, up to the next `## `."""
    start = markdown.index(heading)
    end = markdown.find("\n## ", start + len(heading))
    return markdown[start : end if end != -1 else len(markdown)]


def _complete(command: str) -> bool:
    if command.endswith("\\"):
        return False
    try:
        shlex.split(command)
    except ValueError:  # a quote still open: the command goes on on the next line
        return False
    return True


def commands(text: str) -> list[Command]:
    """Every `$ ` command of `text` (a README section), in order, with its shown answer."""
    found: list[Command] = []
    block = -1
    in_fence = False
    current: list[str] | None = None
    comment = ""
    answer: list[str] = []

    def flush() -> None:
        nonlocal current, answer
        if current is not None:
            while answer and not answer[-1].strip():
                answer.pop()
            found.append(Command("\n".join(current), tuple(answer), block, comment))
        current, answer = None, []

    for line in text.splitlines():
        if line.startswith("```"):
            if in_fence:
                flush()
            else:
                block += 1
            in_fence = not in_fence
            continue
        if not in_fence:
            continue
        if current is not None and not _complete("\n".join(current)):
            current.append(line)
        elif line.startswith("$ "):
            flush()
            first, _, note = line[2:].partition("  #")
            current, comment = [first.rstrip()], note.strip()
        elif current is not None:
            answer.append(line)
    return found


@dataclass
class Bindings:
    """What each example value of the README turned out to be in this run."""

    real: dict[str, str] = field(default_factory=dict)

    def bind(self, example: str, value: str) -> str | None:
        """Binds `example` to `value`; why not, when it cannot be."""
        bound = self.real.get(example)
        if bound is not None:
            return None if bound == value else f"{example} was {bound} earlier, here {value}"
        for other, real in self.real.items():
            if real == value:
                return f"{value} is {other} earlier, but the README shows {example} here"
        self.real[example] = value
        return None

    def substitute(self, command: str) -> str:
        """`command` with every abbreviated example replaced by the real value it is bound to."""

        def real(match: re.Match[str]) -> str:
            prefix = match.group(1)
            candidates = {e: v for e, v in self.real.items() if e.startswith(prefix)}
            if len(candidates) != 1:
                raise LookupError(
                    f"{prefix}{ELLIPSIS} names {len(candidates)} ids shown earlier "
                    f"(one expected): {sorted(candidates)}"
                )
            return next(iter(candidates.values()))

        return _ABBREVIATION.sub(real, command)


def _line_pattern(expected: str) -> tuple[re.Pattern[str], list[str]]:
    """A regex for one expected line, and the examples its groups capture, in order."""
    parts: list[str] = []
    examples: list[str] = []
    for piece in _TOKEN.split(expected):
        if not piece:
            continue
        if piece == ELLIPSIS:
            parts.append(".*?")
        elif re.fullmatch(TIMESTAMP, piece):
            parts.append(TIMESTAMP)
        elif _VARIABLE.fullmatch(piece):
            parts.append(f"({UUID if re.fullmatch(UUID, piece) else CALL_ID})")
            examples.append(piece)
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts)), examples


def _is_gap(line: str) -> bool:
    return line.strip().startswith(ELLIPSIS)


@dataclass(frozen=True)
class Mismatch:
    """Where a real answer stops being the README's."""

    expected_line: int  # index in the expected lines (len: the answer goes on too long)
    actual_line: int  # index in the real lines (len: the answer stops too early)
    reason: str


class _Matcher:
    """One answer against the lines the README shows: line for line up to a gap, and at a
    gap every number of skipped lines, fewest first (remembering what failed)."""

    def __init__(self, expected: Sequence[str], actual: Sequence[str]) -> None:
        self.expected = expected
        self.actual = actual
        self.patterns = [None if _is_gap(line) else _line_pattern(line) for line in expected]
        self.furthest = Mismatch(0, 0, "")
        self.failed: set[tuple[int, int, frozenset[tuple[str, str]]]] = set()

    def note(self, i: int, j: int, reason: str) -> None:
        if (i, j) >= (self.furthest.expected_line, self.furthest.actual_line):
            self.furthest = Mismatch(i, j, reason)

    def attempt(self, i: int, j: int, real: Mapping[str, str]) -> dict[str, str] | None:
        """The bindings with which `expected[i:]` matches `actual[j:]`, or None."""
        key = (i, j, frozenset(real.items()))
        if key in self.failed:
            return None
        trial = Bindings(dict(real))
        i, j = self._lines(i, j, trial)
        result: dict[str, str] | None = None
        if i < 0:
            result = None  # a line differs
        elif i < len(self.expected):  # at a gap
            for k in range(j, len(self.actual) + 1):
                result = self.attempt(i + 1, k, trial.real)
                if result is not None:
                    break
        elif j == len(self.actual):
            result = trial.real
        else:
            self.note(i, j, "the answer goes on")
        if result is None:
            self.failed.add(key)
        return result

    def _lines(self, i: int, j: int, trial: Bindings) -> tuple[int, int]:
        """Matches line for line up to the next gap or the end; (-1, -1) on a mismatch."""
        while i < len(self.expected):
            pattern = self.patterns[i]
            if pattern is None:
                break
            if j == len(self.actual):
                self.note(i, j, "the answer stops here")
                return -1, -1
            regex, examples = pattern
            found = regex.fullmatch(self.actual[j])
            if found is None:
                self.note(i, j, "this line differs")
                return -1, -1
            for example, value in zip(examples, found.groups(), strict=True):
                why = trial.bind(example, value)
                if why is not None:
                    self.note(i, j, why)
                    return -1, -1
            i, j = i + 1, j + 1
        return i, j


def match(expected: Sequence[str], actual: Sequence[str], bindings: Bindings) -> Mismatch | None:
    """None when `actual` is the answer `expected` shows; `bindings` then holds what the
    examples were bound to. Otherwise where it differs (the furthest line of `expected`
    reached), with `bindings` untouched."""
    matcher = _Matcher(expected, actual)
    result = matcher.attempt(0, 0, bindings.real)
    if result is None:
        return matcher.furthest
    bindings.real.update(result)
    return None


def explain(command: str, expected: Sequence[str], actual: Sequence[str], where: Mismatch) -> str:
    """A failure message: the command, where its answer departs from the README's, both."""
    shown = expected[where.expected_line] if where.expected_line < len(expected) else "(end)"
    got = actual[where.actual_line] if where.actual_line < len(actual) else "(end)"
    return (
        f"`{command}`\n{where.reason}:\n  README line {where.expected_line + 1}: {shown}\n"
        f"  real line {where.actual_line + 1}:   {got}\n"
        "--- README shows ---\n"
        + "\n".join(expected)
        + "\n--- grpcurl printed ---\n"
        + "\n".join(actual)
    )
