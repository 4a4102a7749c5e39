"""P5-protocol benchmarks: P5's own Beauty split, and a benchmark built from the real 2014 Musical
Instruments 5-core file, checked against a plain-Python reading of the same files."""

from __future__ import annotations

import ast
import json
import os
import pickle
import random
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from p5_stage import run_p5_benchmark

from recgpt_data.engines.local import LocalEngine
from recgpt_data.errors import UsageError
from recgpt_data.ingest import ingest
from recgpt_data.p5 import tasks
from recgpt_data.p5.build import REDRAWN, write_benchmark
from recgpt_data.p5.plain_pickle import load_plain_pickle
from recgpt_data.p5.ratings import read_rating_splits
from recgpt_data.p5.splits import (
    LEAK_DROPPED,
    build_benchmark,
    datamaps,
    held_out_rows,
    load_p5,
    sequential_text,
)
from recgpt_data.schema import empty
from recgpt_data.split import drop_held_out
from recgpt_data.stage import Context
from recgpt_data.stages.load_p5 import LoadP5Params, load_p5_stage
from recgpt_data.stages.p5_benchmark import P5BenchmarkParams
from recgpt_data.tokenizer import DEFAULT_TOKENIZER

INSTRUMENTS = "amazon2014/Musical_Instruments"
MUSIC = "amazon2014/Digital_Music"


def gz_lines(path: Path) -> list[str]:
    """The complete lines of a gzip file, even one cut off mid-stream (two samples are)."""
    data = zlib.decompressobj(wbits=31).decompress(path.read_bytes())
    return data.decode("utf-8", errors="replace").splitlines(keepends=True)


def plain_p5(path: Path, k: int = 5) -> tuple[list[str], list[str], list[list[int]]]:
    """P5's preprocessing written out in plain Python: users in first-appearance order, each user's
    items sorted by time (stable: file order breaks ties), iterative k-core, items numbered as met."""
    user_events: dict[str, list[tuple[int, int, str]]] = {}
    for number, line in enumerate(gz_lines(path), 1):
        if line.endswith("\n"):
            try:
                review = json.loads(line)
            except json.JSONDecodeError:
                continue
            user_events.setdefault(review["reviewerID"], []).append((review["unixReviewTime"], number, review["asin"]))
    while True:
        item_counts = Counter(asin for events in user_events.values() for _, _, asin in events)
        kept = {user: [e for e in events if item_counts[e[2]] >= k] for user, events in user_events.items()}
        kept = {user: events for user, events in kept.items() if len(events) >= k}
        if sum(map(len, kept.values())) == sum(map(len, user_events.values())):
            break
        user_events = kept
    users, items, sequences, item_number = [], [], [], {}
    for user, events in user_events.items():
        users.append(user)
        sequence = []
        for _, _, asin in sorted(events):
            if asin not in item_number:
                item_number[asin] = len(items) + 1
                items.append(asin)
            sequence.append(item_number[asin])
        sequences.append(sequence)
    return users, items, sequences


@pytest.fixture(scope="module")
def canonical(shared, tmp_path_factory) -> tuple[pl.DataFrame, pl.DataFrame]:
    out = tmp_path_factory.mktemp("canonical")
    raw = shared / "amazon2014"
    ingest(
        "amazon2014",
        [
            raw / "reviews_Musical_Instruments_5.json.gz",
            raw / "reviews_Digital_Music_5.json.gz",
            raw / "meta_Digital_Music.json.gz",
        ],
        out,
    )
    interactions = pl.read_parquet(out / "interactions" / "**" / "*.parquet")
    return interactions, pl.read_parquet(out / "items" / "**" / "*.parquet")


@pytest.fixture(scope="module")
def instruments(canonical):
    built = build_benchmark(canonical[0].lazy(), INSTRUMENTS, seed=11)
    return built, built.left_out


def test_p5_beauty_split_loads_with_its_published_counts(shared):
    folder = shared / "p5" / "beauty"
    lines = [line.split() for line in (folder / "sequential_data.txt").read_text().splitlines() if line.strip()]
    assert len(lines) == 22363
    assert len({item for line in lines for item in line[1:]}) == 12101
    assert sum(len(line) - 1 for line in lines) == 198502
    split = load_p5(folder)
    assert (len(split.users), len(split.items), split.interactions) == (22363, 12101, 198502)


def test_p5_beauty_maps_back_to_the_raw_openp5_sequences(shared):
    raw = {}
    for line in (shared / "openp5" / "Beauty" / "user_sequence.txt").read_text().splitlines():
        user, *items = line.split()
        raw[user] = items
    assert len(raw) == 22363
    assert load_p5(shared / "p5" / "beauty").raw_sequences() == raw


def test_p5_split_written_back_equals_p5s_files(shared):
    folder = shared / "p5" / "beauty"
    split = load_p5(folder)
    assert sequential_text(split) == (folder / "sequential_data.txt").read_text().replace("\r\n", "\n")
    theirs = json.loads((folder / "datamaps.json").read_text())
    ours = datamaps(split)
    for name in ("user2id", "item2id", "id2user", "id2item"):
        assert ours[name] == theirs[name]


def test_load_p5_rejects_a_folder_without_p5_files(tmp_path):
    with pytest.raises(UsageError, match="no sequential_data.txt"):
        load_p5(tmp_path)
    (tmp_path / "sequential_data.txt").write_text("1 1 2 3\n")
    with pytest.raises(UsageError, match="no datamaps.json"):
        load_p5(tmp_path)


def test_instruments_benchmark_matches_plain_python_p5_preprocessing(shared, instruments):
    built, _ = instruments
    users, items, sequences = plain_p5(shared / "amazon2014" / "reviews_Musical_Instruments_5.json.gz")
    assert (len(users), len(items), sum(map(len, sequences))) == (1429, 900, 10261)
    assert built.split.users == users
    assert built.split.items == items
    assert built.split.sequences == sequences


def test_kcore_is_iterative_on_a_truncated_file(shared, canonical):
    users, items, sequences = plain_p5(shared / "amazon2014" / "reviews_Digital_Music_5.json.gz")
    built = build_benchmark(canonical[0].lazy(), MUSIC)
    assert (len(built.split.users), len(built.split.items)) == (len(users), len(items)) == (268, 206)
    assert built.split.sequences == sequences
    assert built.left_out.dropped["kcore"] == 6908 - sum(map(len, sequences))
    assert built.kcore_rounds > 1


def test_sequential_split_is_leave_one_out(instruments):
    built, _ = instruments
    events = built.events
    for user_index, sequence in [(1, built.split.sequences[0]), (700, built.split.sequences[699])]:
        rows = events.filter(pl.col("user_index") == user_index).sort("position")
        assert rows["item_index"].to_list() == sequence
        assert rows["sequential_split"][-1] == "test"
        assert rows["sequential_split"][-2] == "validation"
        assert set(rows["sequential_split"][:-2]) <= {"train", LEAK_DROPPED}
    assert (events["sequential_split"] == "test").sum() == 1429


def test_rating_split_is_80_10_10_and_seeded(canonical, instruments):
    built, _ = instruments
    counts = Counter(built.events["rating_split"].to_list())
    # 10,261 interactions: round(8208.8) = 8209 train, round(1026.1) = 1026 validation, 1026 test
    assert counts["validation"] == counts["test"] == 1026
    assert counts["train"] + counts[LEAK_DROPPED] == 8209
    again = build_benchmark(canonical[0].lazy(), INSTRUMENTS, seed=11)
    assert again.events.equals(built.events)
    other = build_benchmark(canonical[0].lazy(), INSTRUMENTS, seed=12)
    assert not other.events["rating_split"].equals(built.events["rating_split"])


def test_leak_fix_leaves_no_evaluated_pair_in_either_training_split(instruments):
    built, stats = instruments
    rows = built.events.select("user_id", "item_id", "sequential_split", "rating_split").rows()
    evaluated = {(u, i) for u, i, s, r in rows if s in ("validation", "test") or r in ("validation", "test")}
    seq_leaks = sum(1 for u, i, s, _ in rows if s != "validation" and s != "test" and (u, i) in evaluated)
    rating_leaks = sum(1 for u, i, _, r in rows if r != "validation" and r != "test" and (u, i) in evaluated)
    assert not {(u, i) for u, i, s, r in rows if s == "train" or r == "train"} & evaluated
    assert stats.dropped["sequential_train:leak"] == seq_leaks > 0
    assert stats.dropped["rating_train:leak"] == rating_leaks > 0


def test_held_out_table_covers_every_evaluated_pair_and_the_guard_drops_them(canonical, instruments):
    built, _ = instruments
    held = held_out_rows(built.events, "instruments", INSTRUMENTS)
    rows = built.events.select("user_id", "item_id", "sequential_split", "rating_split").rows()
    evaluated = {(u, i) for u, i, s, r in rows if s in ("validation", "test") or r in ("validation", "test")}
    assert set(held.select("user_id", "item_id").rows()) == evaluated
    assert set(held["split"]) == {"validation", "test"}
    kept = drop_held_out(canonical[0].lazy(), held.lazy()).collect()
    assert not set(kept.select("user_id", "item_id").rows()) & evaluated
    assert kept.height == canonical[0].height - sum(
        1 for u, i in canonical[0].select("user_id", "item_id").rows() if (u, i) in evaluated
    )


def meta_titles(path: Path) -> dict[str, str]:
    titles = {}
    for line in gz_lines(path):
        try:
            record = ast.literal_eval(line)
        except (SyntaxError, ValueError):
            continue
        titles[record["asin"]] = record.get("title")
    return titles


def test_benchmark_stage_writes_p5_files_and_prompts(shared, canonical, tmp_path):
    ctx = Context(seed=5, out_dir=tmp_path / "a")
    absent = tmp_path / "rating_splits_augmented.pkl"
    params = P5BenchmarkParams(benchmarks=[{"name": "music", "dataset": MUSIC, "rating_splits": str(absent)}])
    output = run_p5_benchmark({"interactions": canonical[0].lazy(), "items": canonical[1].lazy()}, params, ctx)
    folder = tmp_path / "a" / "eval" / "music"
    assert output.stats.info["warnings"] == [f"music: no {absent}; rating split redrawn"]
    assert json.loads((folder / "summary.json").read_text())["rating_split_from"].startswith("redrawn here")
    _, items, sequences = plain_p5(shared / "amazon2014" / "reviews_Digital_Music_5.json.gz")
    expected = "".join(f"{u} {' '.join(map(str, s))}\n" for u, s in enumerate(sequences, 1))
    assert (folder / "sequential_data.txt").read_text() == expected
    assert json.loads((folder / "datamaps.json").read_text())["id2item"]["1"] == items[0]
    assert output.tables["held_out"].height == output.stats.rows_out["held_out"] > 0

    tests = [json.loads(line) for line in (folder / "prompts" / "next_item_test.jsonl").read_text().splitlines()]
    assert len(tests) == 268
    first = tests[0]
    titles = meta_titles(shared / "amazon2014" / "meta_Digital_Music.json.gz")
    history = [items[i - 1] for i in sequences[0][:-1]]
    assert first["item_id"] == items[sequences[0][-1] - 1]
    assert first["seen_item_ids"] == history
    assert f"Title: {titles[history[-1]]}" in first["prompt"].split("\n")[-3]
    assert first["response"].startswith(f"Title: {titles[first['item_id']]}")

    ratings = [json.loads(line) for line in (folder / "prompts" / "rating_test.jsonl").read_text().splitlines()]
    assert ratings and all(r["prompt"].endswith("; Rating:\n\n### Response:") for r in ratings)
    assert all(r["response"] == f"{r['target_rating']}/5.0" for r in ratings)

    run_p5_benchmark(
        {"interactions": canonical[0].lazy(), "items": canonical[1].lazy()},
        params,
        Context(seed=5, out_dir=tmp_path / "b"),
    )
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
            assert twin.read_bytes() == path.read_bytes(), path.name


def test_benchmark_tasks_write_what_one_process_writes(canonical, tmp_path, monkeypatch):
    """Two benchmarks, their prompts in chunks of a few hundred events run in two worker processes:
    every file and the held-out rows are those one process writes for each benchmark whole."""
    monkeypatch.setattr(tasks, "CHUNK_ROWS", 300)
    specs = [{"name": "music", "dataset": MUSIC}, {"name": "instruments", "dataset": INSTRUMENTS, "k": 4}]
    params = P5BenchmarkParams(benchmarks=specs, max_tokens=512)  # short prompts keep the test fast
    tables = {"interactions": canonical[0].lazy(), "items": canonical[1].lazy()}
    engine = LocalEngine(workers=2, threads=1)
    try:
        output = run_p5_benchmark(tables, params, Context(seed=3, out_dir=tmp_path / "tasks"), engine.map)
    finally:
        engine.close()
    frames = []
    for spec in params.benchmarks:
        built = build_benchmark(canonical[0].lazy(), spec.dataset, spec.k, seed=3)
        assert built.events.height > 3 * 300  # several chunks
        items = canonical[1].lazy().filter(pl.col("dataset") == spec.dataset)
        folder = tmp_path / "one" / "eval" / spec.name
        write_benchmark(
            folder, built.split, built.events, items, spec.name, params.max_tokens, DEFAULT_TOKENIZER, REDRAWN
        )
        frames.append(held_out_rows(built.events, spec.name, spec.dataset))
    written = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(tmp_path / "tasks") for p in (tmp_path / "tasks").rglob("*") if p.is_file())
    for path in written:
        assert (tmp_path / "tasks" / path).read_bytes() == (tmp_path / "one" / path).read_bytes(), path
    assert output.tables["held_out"].equals(pl.concat(frames))


def test_load_p5_stage_writes_the_split_and_holds_out_each_users_last_two_items(shared, tmp_path):
    beauty = {"name": "beauty", "dataset": "amazon2014/Beauty", "path": str(shared / "p5" / "beauty")}
    params = LoadP5Params(benchmarks=[beauty])
    output = load_p5_stage({"items": empty("items").lazy()}, params, Context(out_dir=tmp_path))
    held = output.tables["held_out"]
    assert held.height == 2 * 22363
    last_two = {}
    for line in (shared / "openp5" / "Beauty" / "user_sequence.txt").read_text().splitlines():
        user, *items = line.split()
        last_two[user] = (items[-2], items[-1])
    validation = held.filter(pl.col("split") == "validation")
    test = held.filter(pl.col("split") == "test")
    expected_validation = {user: pair[0] for user, pair in last_two.items()}
    assert dict(zip(validation["user_id"], validation["item_id"], strict=True)) == expected_validation
    assert dict(zip(test["user_id"], test["item_id"], strict=True)) == {u: pair[1] for u, pair in last_two.items()}
    written = (tmp_path / "eval" / "beauty" / "sequential_data.txt").read_text()
    assert written == (shared / "p5" / "beauty" / "sequential_data.txt").read_text().replace("\r\n", "\n")
    assert output.stats.info["warnings"] == ["beauty: no items of amazon2014/Beauty; no prompts"]


def p5_rating_pickle(path: Path, reviews: list[dict], seed: int = 2022) -> dict:
    """A ``rating_splits_augmented.pkl`` in P5's structure, written the way P5's notebook writes it:
    a seeded 80/10/10 of the reviews, P5's ``explanation``/``feature`` keys on some, augmentation
    copies of training reviews (another ``overall``) after the originals, index lists of
    ``numpy.int64`` for validation and test, and the highest pickle protocol."""
    rng = random.Random(seed)
    order = list(range(len(reviews)))
    rng.shuffle(order)
    n_train, n_valid = round(len(order) * 0.8), round(len(order) * 0.1)
    indices = {"train": order[:n_train], "val": order[n_train : n_train + n_valid], "test": order[n_train + n_valid :]}
    data: dict = {}
    for key, chosen in indices.items():
        data[key] = [dict(reviews[i]) for i in chosen]
        data[f"{key}_indices"] = chosen if key == "train" else [np.int64(i) for i in chosen]
    for review in data["train"][::7]:
        review["explanation"], review["feature"] = review.get("summary", ""), "sound"
    data["train"] += [dict(r, overall=float(rng.randint(1, 5))) for r in data["train"][:50]]
    path.write_bytes(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    return data


def music_reviews(shared: Path) -> list[dict]:
    return [
        json.loads(line)
        for line in gz_lines(shared / "amazon2014" / "reviews_Digital_Music_5.json.gz")
        if line.endswith("\n")
    ]


def prompt_rows(folder: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (folder / "prompts" / f"{name}.jsonl").read_text().splitlines()]


def test_benchmark_takes_p5s_official_rating_split_and_holds_out_all_of_it(shared, canonical, tmp_path):
    reviews = music_reviews(shared)
    official = p5_rating_pickle(tmp_path / "rating_splits_augmented.pkl", reviews)
    users, items, sequences = plain_p5(shared / "amazon2014" / "reviews_Digital_Music_5.json.gz")
    in_core = Counter((users[u], items[i - 1]) for u, seq in enumerate(sequences) for i in seq)
    spec = {"name": "music", "dataset": MUSIC, "rating_splits": str(tmp_path / "rating_splits_augmented.pkl")}
    output = run_p5_benchmark(
        {"interactions": canonical[0].lazy(), "items": canonical[1].lazy()},
        P5BenchmarkParams(benchmarks=[spec]),
        Context(seed=5, out_dir=tmp_path / "out"),
    )
    folder = tmp_path / "out" / "eval" / "music"
    evaluated = {key: {(r["reviewerID"], r["asin"]): r["overall"] for r in official[key]} for key in ("val", "test")}
    missing = 0  # evaluated reviews whose prompt cannot fit the token budget
    for key, name in (("val", "rating_validation"), ("test", "rating_test")):
        expected = {pair: rating for pair, rating in evaluated[key].items() if pair in in_core}
        rows = {(r["user_id"], r["item_id"]): r["target_rating"] for r in prompt_rows(folder, name)}
        assert rows.items() <= expected.items() and rows
        missing += len(expected) - len(rows)
    assert missing == output.stats.info["left_out_of_benchmarks"]["rating:too_long"]
    held = output.tables["held_out"]
    last_two = {(users[u], items[i - 1]) for u, seq in enumerate(sequences) for i in seq[-2:]}
    assert set(held.select("user_id", "item_id").iter_rows()) == last_two | set(evaluated["val"]) | set(
        evaluated["test"]
    )
    reviewed = Counter(
        (r["reviewerID"], r["asin"])
        for key in ("train", "val", "test")
        for r in official[key][: len(official[f"{key}_indices"])]
    )
    matched = sum(min(n, in_core[pair]) for pair, n in reviewed.items())
    info = output.stats.info["music"]
    assert info["official_reviews"] == {
        "train": len(official["train_indices"]),
        "validation": len(official["val"]),
        "test": len(official["test"]),
        "augmented_train_copies": 50,
        "events_without_review": sum(in_core.values()) - matched,
        "reviews_without_event": len(reviews) - matched,
    }
    assert json.loads((folder / "summary.json").read_text())["rating_split_from"].startswith("P5's official")


def test_load_p5_reads_the_official_rating_split_beside_p5s_files(shared, canonical, tmp_path):
    reviews = music_reviews(shared)
    users, items, sequences = plain_p5(shared / "amazon2014" / "reviews_Digital_Music_5.json.gz")
    split_dir = tmp_path / "p5" / "music"
    split_dir.mkdir(parents=True)
    (split_dir / "sequential_data.txt").write_text(
        "".join(f"{u} {' '.join(map(str, s))}\n" for u, s in enumerate(sequences, 1))
    )
    (split_dir / "datamaps.json").write_text(
        json.dumps(
            {
                "id2user": {str(n): u for n, u in enumerate(users, 1)},
                "id2item": {str(n): i for n, i in enumerate(items, 1)},
            }
        )
    )
    official = p5_rating_pickle(split_dir / "rating_splits_augmented.pkl", reviews)
    spec = {"name": "music", "dataset": MUSIC, "path": str(split_dir)}
    output = load_p5_stage(
        {"items": canonical[1].lazy()}, LoadP5Params(benchmarks=[spec]), Context(out_dir=tmp_path / "out")
    )
    in_core = {(users[u], items[i - 1]) for u, seq in enumerate(sequences) for i in seq}
    test = {(r["reviewerID"], r["asin"]): r for r in official["test"]}
    rows = prompt_rows(tmp_path / "out" / "eval" / "music", "rating_test")
    validation = prompt_rows(tmp_path / "out" / "eval" / "music", "rating_validation")
    prompted = {(r["user_id"], r["item_id"]) for r in rows}
    assert prompted <= set(test) & in_core
    missing = (
        len(set(test) & in_core)
        - len(rows)
        + len({(r["reviewerID"], r["asin"]) for r in official["val"]} & in_core)
        - len(validation)
    )
    assert missing == output.stats.info["left_out_of_benchmarks"]["rating:too_long"]
    for row in rows:
        assert row["response"] == f"{test[row['user_id'], row['item_id']]['overall']}/5.0"
    held = set(output.tables["held_out"].select("user_id", "item_id").iter_rows())
    assert held >= set(test) | {(r["reviewerID"], r["asin"]) for r in official["val"]}


class RunsACommand:
    """What a hostile pickle holds: unpickling it would run a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_hostile_pickle_fails_in_one_line_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    hostile = tmp_path / "rating_splits_augmented.pkl"
    hostile.write_bytes(pickle.dumps({"train": [RunsACommand(f"touch {marker}")], "val": [], "test": []}))
    with pytest.raises(UsageError, match=r"refused to unpickle (posix|os)\.system") as error:
        read_rating_splits(hostile)
    assert "\n" not in str(error.value)
    assert not marker.exists()
    hostile.write_bytes(pickle.dumps(Path("/etc/passwd")))
    with pytest.raises(UsageError, match="refused to unpickle pathlib"):
        read_rating_splits(hostile)
    hostile.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(UsageError, match="expected P5's dict"):
        read_rating_splits(hostile)


def test_plain_unpickler_decodes_numpy_scalars_without_numpy_code(tmp_path):
    path = tmp_path / "x.pkl"
    values = [np.int64(-3), np.int32(7), np.uint8(200), np.float64(2.5), np.float32(0.25), np.bool_(True)]
    path.write_bytes(pickle.dumps({"v": values, "s": {1, 2}}, protocol=pickle.HIGHEST_PROTOCOL))
    loaded = load_plain_pickle(path)
    assert loaded == {"v": [-3, 7, 200, 2.5, 0.25, True], "s": {1, 2}}
    assert [type(v) for v in loaded["v"]] == [int, int, int, float, float, bool]
