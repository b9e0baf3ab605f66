"""The reading of the README's console sessions (tests/readme_session.py): what a command is,
and that the matcher refuses every answer that is not the one shown."""

from __future__ import annotations

import pytest

from tests.readme_session import Bindings, commands, match, section

APP = "3ecec7ad-5374-40a5-89ce-4e96fcad94d9"
OTHER = "de6ba4ce-c11e-4830-ba2c-51e27990bead"
REAL_APP = "0b1c2d3e-4f50-4a61-8b72-93a4b5c6d7e8"
REAL_OTHER = "11111111-2222-4333-8444-555555555555"

SESSION = f"""## A session

Prose, with a `$ fake` command outside any block.

```console
$ export AUTH="x"
$ grpcurl -d '{{
    "a": 1}}' host/Method
{{
  "id": "{APP}"
}}

$ grpcurl -d '{{"app_id":"3ecec7ad-…"}}' \\
    host/Other
ERROR:
  Code: NotFound
```

```console
$ grpcurl host/Watch  # in a second terminal
{{}}
```

## The next section
$ not this
"""


def test_commands_are_read_with_their_continuations_answers_and_comments() -> None:
    found = commands(section(SESSION, "## A session"))
    assert [c.text for c in found] == [
        'export AUTH="x"',
        "grpcurl -d '{\n    \"a\": 1}' host/Method",
        'grpcurl -d \'{"app_id":"3ecec7ad-…"}\' \\\n    host/Other',
        "grpcurl host/Watch",
    ]
    assert [c.expected for c in found] == [
        (),
        ("{", f'  "id": "{APP}"', "}"),
        ("ERROR:", "  Code: NotFound"),
        ("{}",),
    ]
    assert [c.block for c in found] == [0, 0, 0, 1]
    assert found[3].comment == "in a second terminal"


def test_an_identical_answer_matches_and_binds_the_examples() -> None:
    bindings = Bindings()
    assert match([f'"id": "{APP}"', "x"], [f'"id": "{REAL_APP}"', "x"], bindings) is None
    assert bindings.real == {APP: REAL_APP}
    assert bindings.substitute('{"app_id":"3ecec7ad-…"}') == f'{{"app_id":"{REAL_APP}"}}'


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        (['"cursor": "1"'], ['"cursor": "2"']),  # a literal differs
        (["a", "b"], ["a"]),  # the answer stops early
        (["a"], ["a", "b"]),  # the answer goes on
        ([f"{APP} {APP}"], [f"{REAL_APP} {REAL_OTHER}"]),  # one example, two values
        ([f"{APP} {OTHER}"], [f"{REAL_APP} {REAL_APP}"]),  # two examples, one value
        (['"text": "I\'ll…"'], ['"text": "We…"']),  # what comes before … differs
        (["{", "…", "}"], ["{", "x"]),  # a gap does not excuse the lines after it
        (['"at": "2026-12-03T13:15:51.014165Z"'], ['"at": "soon"']),  # not a timestamp
    ],
)
def test_a_different_answer_is_refused(expected: list[str], actual: list[str]) -> None:
    bindings = Bindings()
    assert match(expected, actual, bindings) is not None
    assert bindings.real == {}  # nothing bound by an answer that did not match


def test_a_value_bound_earlier_must_come_back() -> None:
    bindings = Bindings({APP: REAL_APP})
    assert match([f'"app_id": "{APP}"'], [f'"app_id": "{REAL_OTHER}"'], bindings) is not None
    assert match([f'"id": "{OTHER}"'], [f'"id": "{REAL_APP}"'], bindings) is not None


def test_gaps_ellipses_and_timestamps_stand_for_what_they_say() -> None:
    expected = [
        "{",
        '  "text": "I\'ll…"',
        "… (the rest)",
        '  "at": "2026-12-03T13:15:51.014165Z"',
        "}",
    ]
    actual = ["{", '  "text": "I\'ll build"', "a", "b", '  "at": "2027-01-01T00:00:00Z"', "}"]
    assert match(expected, actual, Bindings()) is None
    no_gap_needed = ["{", '  "text": "I\'ll"', '  "at": "2027-01-01T00:00:00.5Z"', "}"]
    assert match(expected, no_gap_needed, Bindings()) is None


def test_a_mismatch_says_which_line() -> None:
    where = match(
        ["{", '  "a": 1', '  "b": 2', "}"], ["{", '  "a": 1', '  "b": 3', "}"], Bindings()
    )
    assert where is not None
    assert (where.expected_line, where.actual_line, where.reason) == (2, 2, "this line differs")


def test_an_abbreviation_must_name_exactly_one_id_shown_earlier() -> None:
    with pytest.raises(LookupError, match="names 0 ids"):
        Bindings().substitute('{"app_id":"3ecec7ad-…"}')
    both = Bindings({APP: REAL_APP, "3ecec7ad-0000-4000-8000-000000000000": REAL_OTHER})
    with pytest.raises(LookupError, match="names 2 ids"):
        both.substitute('{"app_id":"3ecec7ad-…"}')
