"""``recgpt-train``: train from a YAML/TOML recipe, or hand off to the evaluation harness."""

from __future__ import annotations

import argparse
import importlib
import sys

import yaml

from recgpt_train.config import load_config


def _override(text: str) -> dict:
    """``a.b=value`` -> ``{"a": {"b": value}}`` (the value parsed as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    out: dict = {}
    node = out
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(value)
    return out


def _merge(items: list[dict]) -> dict:
    merged: dict = {}
    for item in items:
        node, src = merged, item
        while True:
            (key, value), = src.items()
            if isinstance(value, dict):
                node, src = node.setdefault(key, {}), value
            else:
                node[key] = value
                break
    return merged


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``recgpt-train`` console script."""
    parser = argparse.ArgumentParser(prog="recgpt-train", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("train", help="train (single process, or under torchrun with FSDP)")
    run.add_argument("--config", required=True, help="recipe file (.yaml, .yml or .toml)")
    run.add_argument("--resume", action="store_true", help="continue from <out_dir>/checkpoint.pt")
    run.add_argument("--set", dest="overrides", type=_override, action="append", default=[],
                     metavar="KEY=VALUE", help="override a recipe key, e.g. --set optim.lr=1e-5")
    sub.add_parser("evaluate", help="evaluate a trained model (recgpt_train.evaluate)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "evaluate":
        return importlib.import_module("recgpt_train.evaluate").main(rest) or 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        cfg = load_config(args.config, _merge(args.overrides))
    except (OSError, TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from recgpt_train.train import train

    train(cfg, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
