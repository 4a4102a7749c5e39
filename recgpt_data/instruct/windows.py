"""A user's history cut into instruction windows, forward from its oldest item, as the authors cut theirs.

A window is a run of consecutive items: its last item is the target, the items before it the history.
The first window starts at the oldest item and takes as many items as fit the token budget
(:func:`recgpt_data.instruct.templates.token_count`); each next window starts :data:`OVERLAP` items
before the previous one ended (on its last history item and its target) and again takes as many as
fit; the last window, which reaches the newest item, is the short one. The authors' released windows
(rows 6-10 and 11-14 of their sample) are cut exactly this way: see ``docs/instruct.md``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from recgpt_data.instruct.templates import MAX_TOKENS, Pair, PairBuilder, line_costs, token_count

OVERLAP = 2  # items a window shares with the one before it: that window's last history item and target


@dataclass(frozen=True)
class Window:
    """One window: the index of its first item and of its target, and the pair it renders."""

    start: int
    target: int
    pair: Pair


@dataclass(frozen=True)
class Cut:
    """A history's windows, oldest first, and how many window starts could not hold a window."""

    windows: list[Window]
    too_long: int


class WindowCutter:
    """Cuts one history (its item lines, and a pair builder per item that may be a target) into windows."""

    def __init__(
        self,
        lines: Sequence[str],
        builders: Sequence[PairBuilder | None],
        tokenizer: Tokenizer,
        max_tokens: int = MAX_TOKENS,
        min_history: int = 1,
    ):
        self.lines, self.builders, self.tokenizer = lines, builders, tokenizer
        self.max_tokens, self.min_history = max_tokens, min_history
        self.targets = [t for t, builder in enumerate(builders) if builder is not None and t >= min_history]
        self.prefix = [0]
        for cost in line_costs(tokenizer, lines):
            self.prefix.append(self.prefix[-1] + cost)
        self.frame = self.frame_tokens()

    def count(self, pair: Pair) -> int:
        """The tokens ``pair`` counts against the budget."""
        return token_count(self.tokenizer, pair.prompt, pair.response)

    def frame_tokens(self) -> int:
        """The tokens of a pair besides its items' lines, measured on the first target alone."""
        if not self.targets:
            return 0
        first = self.targets[0]
        return self.count(self.builders[first]([])) - (self.prefix[first + 1] - self.prefix[first])  # type: ignore[misc]

    def estimate(self, start: int, target: int) -> int:
        """The window's tokens from per-line counts, its target's line standing for the target (a first
        guess: the target is written differently, and joining lines can merge tokens)."""
        return self.frame + self.prefix[target + 1] - self.prefix[start]

    def pair(self, start: int, target: int) -> Pair | None:
        """The pair over items ``start..target`` if it fits the budget, else ``None``."""
        pair = self.builders[target](self.lines[start:target])  # type: ignore[misc]
        return pair if self.count(pair) <= self.max_tokens else None

    def longest(self, start: int, first: int) -> Window | None:
        """The longest window from ``start`` that fits, ending on a target from ``targets[first]`` on;
        the per-line estimate picks a first end, exact counts then move it to the last one that fits."""
        targets = self.targets
        at = first
        while at + 1 < len(targets) and self.estimate(start, targets[at + 1]) <= self.max_tokens:
            at += 1
        pair = self.pair(start, targets[at])
        if pair is None:  # the estimate's end is too long: walk down (every end above is known not to fit)
            while pair is None and at > first:
                at -= 1
                pair = self.pair(start, targets[at])
            return None if pair is None else Window(start, targets[at], pair)
        while at + 1 < len(targets) and (longer := self.pair(start, targets[at + 1])) is not None:
            at, pair = at + 1, longer
        return Window(start, targets[at], pair)

    def cut(self) -> Cut:
        """Every window, oldest first; a start whose first window does not fit moves on one item."""
        windows: list[Window] = []
        too_long, start = 0, 0
        while (first := bisect_left(self.targets, start + self.min_history)) < len(self.targets):
            window = self.longest(start, first)
            if window is None:
                too_long += 1
                start += 1
                continue
            windows.append(window)
            if window.target == self.targets[-1]:
                break
            start = max(window.target + 1 - OVERLAP, start + 1)
        return Cut(windows, too_long)
