"""Pipeline specs: a TOML file naming stages in order, each with its parameters.

```toml
name = "demo"
seed = 1234

[[stages]]
stage = "ingest"
params.sources = [{ format = "amazon2018", paths = ["demo:amazon2018"] }]
```

Paths in parameters are relative to the spec's folder; ``demo:`` names the demo data bundled with
the package.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recgpt_data.errors import UsageError

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    id: str | None = None  # defaults to the stage name; lets one stage appear twice
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.id or self.stage


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    seed: int = 0
    stages: list[StageSpec]
    path: Path = Path(".")

    @property
    def folder(self) -> Path:
        return self.path.parent


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and validate the spec at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such pipeline spec: {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        spec = PipelineSpec(**raw, path=path.resolve())
    except (tomllib.TOMLDecodeError, ValidationError, TypeError) as exc:
        raise UsageError(f"{path}: invalid pipeline spec: {exc}") from None
    keys = [s.key for s in spec.stages]
    if len(set(keys)) != len(keys):
        raise UsageError(f"{path}: a stage appears twice; give one an `id`")
    return spec


def resolve_path(value: str, base: Path) -> Path:
    """A spec path: ``demo:<rel>`` inside the bundled demo data, else relative to ``base``."""
    if value.startswith("demo:"):
        return DEMO_DIR / value[len("demo:") :]
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path
