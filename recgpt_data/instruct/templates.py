"""RecGPT's instruction prompts (arXiv 2405.12715, Appendix B), byte for byte as the authors wrote them.

A prompt is ``### Instruction:\\n{instruction}\\n\\n### Response:``; the response follows with no
leading newline. Two tasks:

- **next item**: ``Predict the next item.`` then the history of items ``1..n-1``; the response is
  item ``n``'s line. History and response lines carry the source's response fields only.
- **rating**: ``Predict rating for the last item.`` then items ``1..n`` with the full fields, the last
  line ending in an open ``Rating:``; the response is the rating, e.g. ``5.0/5.0``.

:func:`parse_pair` reads a pair back into its task, noun, history and target, and
:func:`render_parsed` writes it again byte-identical. :func:`token_count` is what a pair counts
against the token budget; :func:`fit_lines` keeps the most recent items before a target that fit it
(the benchmarks' prompts; instruction windows are cut in :mod:`recgpt_data.instruct.windows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from recgpt_data.serialize import SEPARATOR, history_text, parse_history, parse_item_line, render_fields

PROMPT = "### Instruction:\n{instruction}\n\n### Response:"
PROMPT_HEAD = "### Instruction:\n"
PROMPT_TAIL = "\n\n### Response:"
NEXT_ITEM = "next_item"
RATING = "rating"
TASKS = (RATING, NEXT_ITEM)
INSTRUCTIONS = {NEXT_ITEM: "Predict the next item.", RATING: "Predict rating for the last item."}
OPEN_RATING = "Rating:"
MAX_TOKENS = 2048


@dataclass(frozen=True)
class Pair:
    """One instruction pair as the model sees it."""

    prompt: str
    response: str
    task: str


@dataclass(frozen=True)
class ParsedPair:
    """A pair read back: the task, the noun, the history items' fields, and the target.

    For ``next_item`` the target is the response item's fields; for ``rating`` the last history
    item is the rated one (its ``Rating`` empty) and the target is the rating text (``5.0/5.0``)."""

    task: str
    noun: str
    history: list[dict[str, str]]
    target: dict[str, str] | str


def prompt_text(task: str, noun: str, lines: Sequence[str]) -> str:
    """The prompt of ``task`` over a history of item ``lines``."""
    return PROMPT.format(instruction=INSTRUCTIONS[task] + "\n" + history_text(noun, lines))


def open_rating_line(line: str) -> str:
    """The rated item's line (written without its rating) ending in an open ``Rating:``."""
    return f"{line}{SEPARATOR}{OPEN_RATING}" if line else OPEN_RATING


def next_item_pair(noun: str, history: Sequence[str], target: str) -> Pair:
    """A next-item pair: the ``history`` lines, then ``target`` (item n's line) as the response."""
    return Pair(prompt_text(NEXT_ITEM, noun, history), target, NEXT_ITEM)


def rating_pair(noun: str, history: Sequence[str], target: str, rating: str) -> Pair:
    """A rating pair: the ``history`` lines, then ``target`` (the rated item's line without its
    rating) ending in ``Rating:``; the response is ``rating`` (``5.0/5.0``)."""
    return Pair(prompt_text(RATING, noun, [*history, open_rating_line(target)]), rating, RATING)


def parse_pair(prompt: str, response: str) -> ParsedPair:
    """Read a pair written in RecGPT's format back into task, noun, history and target."""
    if not prompt.startswith(PROMPT_HEAD) or not prompt.endswith(PROMPT_TAIL):
        raise ValueError(f"not a RecGPT instruction prompt: {prompt[:80]!r}")
    body = prompt[len(PROMPT_HEAD) : -len(PROMPT_TAIL)]
    instruction, newline, history = body.partition("\n")
    task = next((t for t, text in INSTRUCTIONS.items() if text == instruction), None)
    if task is None or not newline:
        raise ValueError(f"unknown instruction {instruction!r}; known: {', '.join(INSTRUCTIONS.values())}")
    noun, items = parse_history(history)
    if task == RATING:
        if items[-1].get("Rating") != "":
            raise ValueError("a rating prompt must end on an open 'Rating:'")
        return ParsedPair(task, noun, items, response)
    return ParsedPair(task, noun, items, parse_item_line(response))


def render_parsed(parsed: ParsedPair) -> Pair:
    """The pair that :func:`parse_pair` read ``parsed`` from, byte-identical."""
    lines = [render_fields(item) for item in parsed.history]
    prompt = prompt_text(parsed.task, parsed.noun, lines)
    if isinstance(parsed.target, str):
        return Pair(prompt, parsed.target, parsed.task)
    return Pair(prompt, render_fields(parsed.target), parsed.task)


FRAMING_TOKENS = 2  # budget tokens beyond prompt and response; the authors' rows fix 2 to 6 at 2048


def token_count(tokenizer: Tokenizer, prompt: str, response: str) -> int:
    """Tokens a pair counts against the budget: prompt and response encoded apart and joined with
    nothing between them (as llm-foundry's finetuning loader and ``recgpt_train`` do) plus
    ``FRAMING_TOKENS``: the EOS the trainer appends and one token the authors' rows also leave free.
    Under 2048 this makes every one of the authors' windows the longest that fits (``docs/instruct.md``)."""
    return (
        len(tokenizer.encode(prompt, add_special_tokens=False).ids)
        + len(tokenizer.encode(response, add_special_tokens=False).ids)
        + FRAMING_TOKENS
    )


def line_costs(tokenizer: Tokenizer, lines: Sequence[str]) -> list[int]:
    """Tokens each history line adds to a prompt (the line and its newline)."""
    return [len(e.ids) for e in tokenizer.encode_batch([line + "\n" for line in lines], add_special_tokens=False)]


def fit_lines(
    build: PairBuilder,
    history: Sequence[str],
    tokenizer: Tokenizer,
    max_tokens: int = MAX_TOKENS,
    costs: Sequence[int] | None = None,
) -> tuple[Pair, int] | None:
    """The pair over the most recent suffix of ``history`` that fits ``max_tokens`` (prompt plus
    response), with the number of history lines kept; ``None`` where not even one line fits.

    Per-line token counts (``costs``, from :func:`line_costs`) give a first cut (joining lines can
    merge tokens, so it may be a line off); the pair is then encoded whole and cut until it fits."""
    if not history:
        return None
    empty = build([])
    base = token_count(tokenizer, empty.prompt, empty.response)
    costs = line_costs(tokenizer, history) if costs is None else costs
    keep, used = 0, base
    for cost in reversed(costs):
        if used + cost > max_tokens:
            break
        used += cost
        keep += 1
    keep = max(keep, 1)
    while keep >= 1:
        pair = build(history[len(history) - keep :])
        if token_count(tokenizer, pair.prompt, pair.response) <= max_tokens:
            return pair, keep
        keep -= 1
    return None


class PairBuilder:
    """A pair of one task over a target, as a function of the history lines kept."""

    def __init__(self, task: str, noun: str, target: str, rating: str | None = None):
        if task == RATING and rating is None:
            raise ValueError("a rating pair needs its rating")
        self.task, self.noun, self.target, self.rating = task, noun, target, rating

    def __call__(self, history: Sequence[str]) -> Pair:
        if self.task == RATING:
            return rating_pair(self.noun, history, self.target, self.rating or "")
        return next_item_pair(self.noun, history, self.target)
