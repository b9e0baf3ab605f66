"""The scripted model streams its text a word at a time, at the pace it is given, and the
pace changes nothing else: the same turns, the same files."""

from __future__ import annotations

import pytest

from appforge.services.builder.bootstrap import build_models
from appforge.services.builder.models.base import Exchange
from appforge.services.builder.models.scripted import AppKind, ScriptedModel, text_chunks
from appforge.services.builder.settings import BuilderSettings
from tests.unit.scripted_model_helpers import PROMPTS, MemorySandbox, app_files_for


@pytest.mark.parametrize(
    "text", ["", "one", "  two  words ", "I'll build a calculator: a display.\n\nThen\tmore."]
)
def test_chunks_are_words_that_join_to_the_text(text: str) -> None:
    chunks = text_chunks(text)
    assert "".join(chunks) == text
    assert all(chunk.strip() == "" or " " not in chunk.strip() for chunk in chunks)


@pytest.mark.parametrize("kind", list(AppKind))
async def test_each_turns_chunks_join_to_its_text_and_the_files_do_not_change(
    kind: AppKind,
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    chunks: list[str] = []

    async def on_text(chunk: str) -> None:
        chunks.append(chunk)

    model = ScriptedModel(chunk_delay=0.02, sleep=sleep)
    sandbox = MemorySandbox()
    history: list[Exchange] = []
    for _ in range(3):
        chunks.clear()
        slept.clear()
        turn = await model.next_turn(PROMPTS[kind], history, on_text=on_text)
        assert turn == ScriptedModel().turn(PROMPTS[kind], history)  # the pace changes nothing
        assert "".join(chunks) == turn.text and len(chunks) > 3
        assert slept == [0.02] * (len(chunks) - 1)  # between chunks, not before the first
        history.append(Exchange(turn=turn, results=tuple(map(sandbox.run, turn.tool_calls))))
    assert history[-1].turn.done
    assert sandbox.files == app_files_for(kind)


async def test_no_delay_means_no_sleep_and_no_sink_means_no_chunks() -> None:
    async def never(seconds: float) -> None:
        raise AssertionError("slept")

    chunks: list[str] = []

    async def on_text(chunk: str) -> None:
        chunks.append(chunk)

    prompt = PROMPTS[AppKind.CALCULATOR]
    turn = await ScriptedModel(sleep=never).next_turn(prompt, [], on_text=on_text)
    assert "".join(chunks) == turn.text
    quiet = await ScriptedModel(chunk_delay=1.0, sleep=never).next_turn(prompt, [])
    assert quiet == turn


def test_a_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="chunk_delay"):
        ScriptedModel(chunk_delay=-0.01)


def test_the_builders_scripted_model_streams_at_the_configured_pace() -> None:
    models = build_models(BuilderSettings(scripted_stream_ms=25))
    model = models["scripted"]
    assert isinstance(model, ScriptedModel) and model.chunk_delay == 0.025
    instant = build_models(BuilderSettings(scripted_stream_ms=0))["scripted"]
    assert isinstance(instant, ScriptedModel) and instant.chunk_delay == 0
