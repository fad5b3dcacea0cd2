"""What the infrastructure tests share: where things are, the template as data, ASL substitution."""

from __future__ import annotations

import json
import re
import shutil
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
STATEMACHINES = ROOT / "statemachines"
FUNCTIONS = ROOT / "functions"
EVENTS = ROOT / "events"

# `${Name}` as CloudFormation's DefinitionSubstitutions writes it (not `${!Literal}`).
SUBSTITUTION = re.compile(r"\$\{(?!!)([A-Za-z0-9_.]+)\}")


def asl_files() -> list[Path]:
    return sorted(p for p in STATEMACHINES.rglob("*") if p.suffix in {".json", ".yaml", ".yml"} and ".asl." in p.name)


def tool(name: str) -> str:
    """A console script of the test venv (the one running pytest), else one on PATH."""
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.exists():
        return str(venv_bin)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is not installed: install tests/requirements.txt")
    return found


@lru_cache(maxsize=1)
def template() -> dict[str, Any]:
    """template.yaml as data, short-form intrinsics (`!Ref`, `!Sub`, …) decoded by cfn-lint."""
    from cfnlint.decode import decode

    tpl, errors = decode(str(TEMPLATE))
    if errors or tpl is None:
        raise AssertionError(f"template.yaml does not parse: {errors}")
    return tpl


def resources(kind: str | None = None) -> dict[str, dict[str, Any]]:
    res = template()["Resources"]
    return {k: v for k, v in res.items() if kind is None or v.get("Type") == kind}


def substitutions_in(text: str) -> set[str]:
    return set(SUBSTITUTION.findall(text))


def substitute(text: str, values: dict[str, str]) -> str:
    """Replaces every `${Name}` as CloudFormation does; a name without a value is an error."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            raise KeyError(f"no value for ${{{name}}}")
        return str(values[name])

    return SUBSTITUTION.sub(one, text)


def load_asl(path: Path, values: dict[str, str]) -> dict[str, Any]:
    return json.loads(substitute(path.read_text(encoding="utf-8"), values))
