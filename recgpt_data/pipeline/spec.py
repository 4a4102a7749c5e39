"""Pipeline specs: a TOML file naming stages in order, each with its parameters.

```toml
name = "demo"
seed = 1234
tokenizer = "assets:gpt-neox-20b"  # a tokenizer.json or its folder; this one is the default

[[stages]]
stage = "ingest"
params.sources = [{ format = "amazon2018", paths = ["demo:amazon2018"] }]
```

Paths in parameters are relative to the spec's folder; ``demo:`` names the demo data bundled with
the package, ``assets:`` its bundled assets (``assets:gpt-neox-20b``, the default tokenizer). ``${name}`` inside a string parameter is replaced by the spec's ``[vars]`` entry
``name``, which ``recgpt-data run --var name=value`` overrides (for paths that differ per site).
``partitions`` (spec-wide, or per stage) is the number of user buckets a partitioned stage runs in.
``enabled = "${var}"`` on a stage switches an optional stage on or off by a var (``true``/``false``).
``task_cpus`` and ``task_memory`` (``"4GiB"``) on a stage set what each of its tasks declares and may
use, over the run's ``--task-cpus`` / ``--task-memory``; they change where and how its tasks run,
never what they write, so they are not part of its fingerprint.
Spec-wide settings (``tokenizer``) are declared once at the top; the planner resolves them relative
to the spec file and lends them to the stages that use them (:mod:`recgpt_data.pipeline.planner`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from recgpt_data.engines import parse_size
from recgpt_data.errors import UsageError
from recgpt_data.io.storage import Location, is_remote
from recgpt_data.names import SafeName

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
PREFIXES = {"demo:": DEMO_DIR, "assets:": ASSETS_DIR}  # bundled data and assets, wherever the package is


def size_bytes(value: Any) -> Any:
    """A size written as text (``"4GiB"``) in bytes, read as ``--task-memory`` reads it; others as given."""
    if not isinstance(value, str):
        return value
    try:
        return parse_size(value)
    except UsageError as exc:
        raise ValueError(str(exc)) from None


Size = Annotated[int, BeforeValidator(size_bytes), Field(ge=1)]


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    id: SafeName | None = None  # defaults to the stage name; lets one stage appear twice; a folder name
    params: dict[str, Any] = Field(default_factory=dict)
    partitions: int | None = Field(default=None, ge=1)  # overrides the spec's for this stage
    enabled: bool = True  # false (or a var that says so) leaves the stage out of the run
    # What each of the stage's tasks declares, over --task-cpus / --task-memory; not in its fingerprint
    task_cpus: float | None = Field(default=None, gt=0)
    task_memory: Size | None = None

    @property
    def key(self) -> str:
        return self.id or self.stage


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SafeName  # names the default output folder out/<name>
    seed: int = 0
    partitions: int = Field(default=1, ge=1)
    tokenizer: str | None = None  # a tokenizer.json (or its folder), relative to the spec file
    vars: dict[str, str] = Field(default_factory=dict)
    stages: list[StageSpec]
    path: Path = Path(".")

    @property
    def folder(self) -> Path:
        return self.path.parent

    def partitions_of(self, stage: StageSpec) -> int:
        """How many user buckets ``stage`` runs in, if it is partitioned."""
        return stage.partitions or self.partitions


VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def substitute(value: Any, variables: Mapping[str, str]) -> Any:
    """``value`` with every ``${name}`` in its strings replaced from ``variables``."""
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in variables:
                raise UsageError(f"${{{name}}} is not defined in [vars] or by --var")
            return variables[name]

        return VAR.sub(lookup, value)
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, variables) for k, v in value.items()}
    return value


def expand_vars(variables: Mapping[str, str]) -> dict[str, str]:
    """Vars with the ``${name}`` references between them resolved (``a = "${raw}/a"``)."""
    resolved = dict(variables)
    for _ in range(len(resolved) + 1):
        expanded = {name: substitute(value, resolved) for name, value in resolved.items()}
        if expanded == resolved:
            return resolved
        resolved = expanded
    raise UsageError(f"[vars] refer to each other in a cycle: {', '.join(sorted(resolved))}")


def load_spec(path: str | Path, overrides: Mapping[str, str] | None = None) -> PipelineSpec:
    """Read and validate the spec at ``path``, with ``overrides`` replacing its ``[vars]``."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such pipeline spec: {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        unknown = sorted(set(overrides or {}) - set(raw.get("vars", {})))
        if unknown:
            declared = ", ".join(sorted(raw.get("vars", {}))) or "none"
            raise UsageError(f"--var {', '.join(unknown)}: not in the [vars] of {path} (declared: {declared})")
        variables = expand_vars({**raw.get("vars", {}), **(overrides or {})})
        raw["stages"] = substitute(raw.get("stages", []), variables)
        if "tokenizer" in raw:
            raw["tokenizer"] = substitute(raw["tokenizer"], variables)
        spec = PipelineSpec(**{**raw, "vars": variables}, path=path.resolve())
        spec.stages = [s for s in spec.stages if s.enabled]
    except ValidationError as exc:
        raise UsageError(f"{path}: invalid pipeline spec: {one_line(exc)}") from None
    except (tomllib.TOMLDecodeError, TypeError) as exc:
        raise UsageError(f"{path}: invalid pipeline spec: {exc}") from None
    keys = [s.key for s in spec.stages]
    if len(set(keys)) != len(keys):
        raise UsageError(f"{path}: a stage appears twice; give one an `id`")
    return spec


def one_line(error: ValidationError) -> str:
    """A spec's validation errors on one line, each where it is and with the value it got where that
    is one value (``stages.2.task_cpus: Input should be greater than 0 (got 0)``)."""
    problems = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"])
        got = problem["input"]
        shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
        problems.append(f"{where}: {problem['msg'].removeprefix('Value error, ')}{shown}")
    return "; ".join(problems)


def resolve_input(value: str, base: Path) -> Location:
    """A spec path that may also be an object-store URL (``s3://bucket/raw/...``), kept as text."""
    return value if is_remote(value) else resolve_path(value, base)


def resolve_path(value: str, base: Path) -> Path:
    """A spec path: ``demo:<rel>`` inside the bundled demo data, ``assets:<rel>`` inside the bundled
    assets (the tokenizer), else relative to ``base``."""
    for prefix, folder in PREFIXES.items():
        if value.startswith(prefix):
            return folder / value[len(prefix) :]
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path
