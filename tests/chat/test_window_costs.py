"""A turn counts its window's tokens once (issue 30): `fit_context` hands the window's
stored costs to `summary_due_now` and `plan`, and the plan carries the whole window's
count for the check that schedules a summary once the reply is stored."""

from __future__ import annotations

from typing import Any

from roleplay.chat.context_manager import ContextManager, stored_costs
from roleplay.core.settings import Settings
from roleplay.sessions.store import StoredMessage, Window


def _window(count: int, tokens: int) -> Window:
    messages = [StoredMessage(role="user" if n % 2 == 0 else "assistant", content=f"line {n}", at=0,
                              tokens=tokens) for n in range(count)]
    return Window(length=count, watermark=-1, first_index=0, summary=None, summarizing=False,
                  messages=messages)


def test_a_plan_carries_the_whole_windows_tokens_though_it_left_some_out() -> None:
    context = ContextManager(Settings.model_validate({"max_context_tokens": 1024}))
    window = _window(40, 60)
    plan = context.plan(window, persona="민지.", summary=None, max_tokens=128, ratio=1.0,
                        character_name=None, language="ko")
    assert plan.dropped_messages > 0
    assert plan.window_local_tokens == 40 * 60 == context.window_tokens(window.messages)


def test_the_costs_handed_in_give_the_plan_and_the_summary_check_they_would_count() -> None:
    context = ContextManager(Settings.model_validate({"max_context_tokens": 1024}))
    window = _window(40, 60)
    costs = stored_costs(window.messages)
    kwargs: dict[str, Any] = {"persona": "민지.", "summary": None, "max_tokens": 128, "ratio": 1.0,
              "character_name": None, "language": "ko"}
    assert context.plan(window, costs=costs, **kwargs) == context.plan(window, **kwargs)
    assert costs == stored_costs(window.messages), "the plan works on a copy"
    for checked, due in ((window, True), (_window(30, 10), False)):
        given = stored_costs(checked.messages)
        assert context.summary_due_now(checked, 200, 128, 1.0, given) is due
        assert context.summary_due_now(checked, 200, 128, 1.0) is due
