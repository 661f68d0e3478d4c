"""Plans a turn's prompt against the context the upstream really has, exactly at the edge.

`ContextManager` plans from local estimates corrected by the learned ratio: cheap, and
close, but not exact. Here that plan meets the upstream:

- the budget is `MAX_CONTEXT_TOKENS` clamped to the model's real context
  (`upstream_limits`); for an upstream that cannot count for us (the dialect says:
  Ollama), planned its safety margin (`OLLAMA_SAFETY_MARGIN`) below the `num_ctx` it is
  sent;
- a prompt estimated within `EXACT_COUNT_MARGIN` of its budget is counted by the
  upstream's own tokenizer and template (`prompt_counter`), and re-planned from that
  count while it does not fit: a summary first when one can make room, else the oldest
  verbatim messages leave the prompt (never the transcript). Below the margin (the
  common turn) nothing extra is asked;
- a prompt the upstream refuses anyway (`ContextOverflow`) is re-planned once from
  what the refusal says (vLLM names its limit and the prompt's true size), the ratio is
  corrected, and the request is sent once more.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from roleplay.characters.persona import PersonaLanguage
from roleplay.chat.context_manager import ContextManager, ContextPlan, stored_costs
from roleplay.chat.token_ratio import observe_prompt_tokens, token_ratio
from roleplay.core.settings import Settings, get_settings
from roleplay.llm.client import ContextOverflow
from roleplay.llm.dialect import upstream_dialect
from roleplay.llm.prompt_counter import upstream_prompt_tokens
from roleplay.llm.upstream_limits import context_budget, forget, remember
from roleplay.memory.block import MemoryBlock
from roleplay.sessions.store import Window

logger = logging.getLogger("roleplay.chat.context_fit")

T = TypeVar("T")
EXACT_PASSES = 3
"""Counts asked per plan at most; each re-plan from a count almost always fits at once."""
REQUEST_PATH_SUMMARIES = 2
"""Summary passes a turn may wait for when its prompt cannot fit otherwise: a pass folds
no more than the summary model's context holds, which a small context keeps small."""
RETRY_SAFETY = 1.05
"""The refused prompt's ratio, applied to the smaller one with this much to spare: the
dropped messages' ratio is not the whole prompt's, and there is no second retry."""
OVERFLOW_RATIO_STEP = 1.15
"""With no count in the refusal (Ollama), plan as if the prompt were this much bigger."""

Summarize = Callable[[], Awaitable[Window | None]]
"""Summarizes the session on the request path; the new window, or None if it could not."""


@dataclass(frozen=True)
class Budget:
    planning: int
    """What the prompt and reply are planned to fit in."""
    sent: int
    """What the upstream is told (Ollama's num_ctx): the same, or more by the safety margin."""


async def budget_for(model: str, settings: Settings) -> Budget:
    context = await context_budget(model, settings)
    margin = upstream_dialect(settings).safety_margin
    return Budget(int(context * (1 - margin)), context)


def _at_edge(plan: ContextPlan, context: ContextManager, margin: float) -> bool:
    inputs = plan.inputs
    assert inputs is not None
    return plan.prompt_tokens + inputs.max_tokens > context.max_context * (1 - margin)


async def _settle(plan: ContextPlan, context: ContextManager, model: str, settings: Settings,
                  summarize: Summarize | None) -> ContextPlan:
    """Counts a plan at the edge exactly, and plans again from the count until it fits."""
    counts = upstream_dialect(settings).counts_prompts
    for _ in range(EXACT_PASSES):
        inputs = plan.inputs
        assert inputs is not None
        if not counts or not _at_edge(plan, context, settings.exact_count_margin):
            return plan
        exact = await upstream_prompt_tokens(model, plan.prompt, settings)
        if exact is None:
            return plan
        if exact + inputs.max_tokens <= context.max_context:
            return dataclasses.replace(plan, prompt_tokens=exact)
        ratio = max(inputs.ratio, exact / max(1, plan.local_tokens)) * 1.01
        logger.info("prompt of %d tokens (estimated %d) does not fit %d - %d: planning again "
                    "at ratio %.3f", exact, plan.prompt_tokens, context.max_context,
                    inputs.max_tokens, ratio)
        window = inputs.window
        summary = inputs.summary
        if summarize is not None:
            system_local = context.system_tokens(inputs.persona, summary, inputs.language, inputs.memory)
            if context.summary_due_now(window, system_local, inputs.max_tokens, ratio):
                summarized = await summarize()
                if summarized is not None:
                    window, summary = summarized, summarized.summary
        plan = context.plan(window, persona=inputs.persona, summary=summary,
                            max_tokens=inputs.max_tokens, ratio=ratio,
                            character_name=inputs.character_name, language=inputs.language,
                            memory=inputs.memory)
    return plan


async def fit_context(
    window: Window, *, model: str, persona: str, max_tokens: int, character_name: str | None,
    language: PersonaLanguage, summarize: Summarize | None, memory: MemoryBlock | None = None,
) -> tuple[Window, ContextPlan, float]:
    """The turn's window (after any summary made on the request path), its plan, and the
    learned ratio it started from. `memory`: the recalled episodes' block, after the summary."""
    settings = get_settings()
    budget = await budget_for(model, settings)
    ratio = await token_ratio(model)
    context = ContextManager(settings, budget.planning)
    costs = stored_costs(window.messages)
    for _ in range(REQUEST_PATH_SUMMARIES):
        system_local = context.system_tokens(persona, window.summary, language, memory)
        if summarize is None or not context.summary_due_now(window, system_local, max_tokens, ratio,
                                                            costs):
            break
        summarized = await summarize()
        if summarized is None:
            break
        window = summarized
        costs = stored_costs(window.messages)
    plan = context.plan(window, persona=persona, summary=window.summary, max_tokens=max_tokens,
                        ratio=ratio, character_name=character_name, language=language,
                        memory=memory, costs=costs)
    plan = await _settle(plan, context, model, settings, summarize)
    return window, dataclasses.replace(plan, context_tokens=budget.sent), ratio


async def replan_after_overflow(plan: ContextPlan, overflow: ContextOverflow,
                                model: str) -> ContextPlan:
    """A plan the upstream should accept: its limit as it said, and the ratio corrected by
    the prompt's true size (vLLM says it) or by a safety step (Ollama does not)."""
    settings = get_settings()
    inputs = plan.inputs
    if inputs is None:
        raise overflow
    forget(model, settings)
    if overflow.limit:
        remember(model, overflow.limit, settings)
    budget = await budget_for(model, settings)
    if overflow.prompt_tokens:
        await observe_prompt_tokens(model, plan.local_tokens, overflow.prompt_tokens, at_once=True)
        ratio = (max(inputs.ratio, overflow.prompt_tokens / max(1, plan.local_tokens))
                 * RETRY_SAFETY)
    else:
        ratio = inputs.ratio * OVERFLOW_RATIO_STEP
    logger.warning("%s refused a prompt as too long (%s); planning again for %d tokens at "
                   "ratio %.3f", model, overflow.message, budget.planning, ratio)
    context = ContextManager(settings, budget.planning)
    replanned = context.plan(inputs.window, persona=inputs.persona, summary=inputs.summary,
                             max_tokens=inputs.max_tokens, ratio=ratio,
                             character_name=inputs.character_name, language=inputs.language,
                             memory=inputs.memory)
    replanned = await _settle(replanned, context, model, settings, None)
    return dataclasses.replace(replanned, context_tokens=budget.sent)


async def send_within_context(plan: ContextPlan, model: str,
                              send: Callable[[ContextPlan], Awaitable[T]]) -> tuple[ContextPlan, T]:
    """`send(plan)`; if the upstream refuses it as too long, once more with a plan made
    from what it said. Answers the plan that was accepted with the result."""
    try:
        return plan, await send(plan)
    except ContextOverflow as overflow:
        replanned = await replan_after_overflow(plan, overflow, model)
        return replanned, await send(replanned)
