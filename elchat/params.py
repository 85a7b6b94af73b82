"""Parameters shared by every stage notebook and the runner: defaults, YAML files, typed values.

Each stage notebook's parameters cell holds plain `name: type = value  # help` lines; its next
cell calls `check_common(...)` so a bad value fails at once, naming the parameter, before any work.

Where a value comes from, lowest to highest precedence (`runner.stage_parameters` merges them):
`notebooks/params/defaults.yaml` (the ONE place for the default preset(s) and language) ->
`notebooks/params/<preset>.yaml` -> `notebooks/params/<lang>.yaml` -> a `--params` file -> `-p
name=value`. A YAML file holds `name: value` for every stage; an optional `"NN": {name: value}`
section holds values that only stage NN sees (a name means one thing in every stage, so
the shipped files need none). Run directories are laid out by `elchat.runs`.

YAML traps, handled here rather than left to each notebook: PyYAML implements YAML 1.1, which
reads `no`/`yes`/`on`/`off` as booleans (Norwegian's code `no` would become False) and `1e-4` as a
STRING (its float pattern needs a dot). `load_yaml`/`parse_value` use a resolver with YAML 1.2
rules (only true/false are booleans; `1e-4` is a float), and `coerce` then converts every value
to the type the notebook declares (`lr: float` turns 3 into 3.0; `lang: str` keeps text as given).
"""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import yaml

from . import runs
from .data import LANGUAGES
from .errors import is_count
from .method import INIT_METHODS
from .paths import DEFAULTS_FILE
from .presets import PRESETS


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and floats (see the module docstring)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
# Added after the int resolver, so "3" stays an int and only dotted/exponent forms are floats.
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9]+|[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def parse_value(text: str):
    """Parse one YAML scalar/list the way a parameter file would (YAML 1.2 rules).

    Example: `parse_value("1e-4") == 1e-4`, `parse_value("no") == "no"`, `parse_value("[1, 2]")`.
    """
    return yaml.load(text, Loader=_Yaml12Loader)


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a parameters YAML file (a mapping) with YAML 1.2 booleans/floats.

    Example: `load_yaml("notebooks/params/am.yaml")["lang"] == "am"`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parameters file {path} does not exist")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Yaml12Loader)
    except yaml.YAMLError as e:
        raise ValueError(f"parameters file {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"parameters file {path}: expected a mapping of name: value, "
                         f"got {type(data).__name__}")
    return data


def defaults() -> dict:
    """The study defaults from `notebooks/params/defaults.yaml` (the one place they live).

    Example: `defaults()["presets"] == ["smollm2-135m", "micro"]`.
    """
    if not DEFAULTS_FILE.is_file():
        raise FileNotFoundError(f"{DEFAULTS_FILE} is missing: the study defaults live there "
                                "(run from a clone of the elchat repository)")
    return load_yaml(DEFAULTS_FILE)


def __getattr__(name: str):
    # Read lazily (PEP 562) so importing elchat.params never needs the repository's notebooks/.
    keys = {"DEFAULT_PRESET": "preset", "DEFAULT_LANG": "lang",
            "DEFAULT_PRESETS": "presets", "DEFAULT_LANGS": "langs"}
    if name in keys:
        return defaults()[keys[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _split_type(type_name: str | None) -> tuple[str, str, bool]:
    """`"list[float] | None"` -> ("list", "float", True): base type, element type, None allowed."""
    t = (type_name or "").replace(" ", "")
    optional = False
    m = re.fullmatch(r"Optional\[(.*)\]", t)
    if m:
        t, optional = m.group(1), True
    parts = [p for p in t.split("|") if p]
    if "None" in parts:
        optional = True
        parts = [p for p in parts if p != "None"]
    t = parts[0] if len(parts) == 1 else ""
    m = re.fullmatch(r"(\w+)(?:\[(.*)\])?", t)
    if not m:
        return "", "", optional
    return m.group(1).lower(), (m.group(2) or "").lower(), optional


_BOOL_TEXT = {"true": True, "yes": True, "on": True, "1": True,
              "false": False, "no": False, "off": False, "0": False}


_KIND_WORDS = {"str": "a string", "float": "a float", "int": "an integer", "bool": "true or false",
               "dict": "a mapping"}


def _coerce_scalar(name, value, kind, where):
    bad = ValueError(f"parameter {name}={value!r}{where}: expected {_KIND_WORDS.get(kind, kind)}")
    if kind == "str":
        if isinstance(value, bool):
            raise ValueError(f"parameter {name}={value!r}{where}: expected a string; "
                             f"quote it in YAML (\"{str(value).lower()}\")")
        if isinstance(value, (int, float)):
            return str(value)
        if not isinstance(value, str):
            raise bad
        return value
    if kind == "float":
        if isinstance(value, bool):
            raise bad
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if kind == "int":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                raise bad from None
        raise bad
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)) and str(value).lower() in _BOOL_TEXT:
            return _BOOL_TEXT[str(value).lower()]
        raise bad
    if kind in ("list", "tuple"):
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ValueError(f"parameter {name}={value!r}{where}: expected a list such as [a, b]")
    if kind == "dict":
        if isinstance(value, dict):
            return value
        raise bad
    return value


def coerce(name: str, value, type_name: str | None, default: str | None = None,
           where: str = ""):
    """Convert `value` to the type a notebook declares for `name` (papermill's type name).

    Example: `coerce("lr", "1e-4", "float") == 1e-4`; `coerce("lang", "no", "str") == "no"`;
    `coerce("sweep_t", [0, 1], "list[float]") == [0.0, 1.0]`.
    """
    kind, elem, optional = _split_type(type_name)
    try:
        default_value = ast.literal_eval(default) if default is not None else None
    except (ValueError, SyntaxError):
        default_value = None
    if value is None or (isinstance(value, str) and value in ("None", "null") and kind != "str"):
        if optional or default_value is None or not kind:
            return None
        raise ValueError(f"parameter {name}=None{where}: expected {_KIND_WORDS.get(kind, kind)}")
    value = _coerce_scalar(name, value, kind, where)
    if kind in ("list", "tuple"):
        if not elem and isinstance(default_value, (list, tuple)) and default_value:
            # `sizes: list = [20, 50]`: take the element type from the declared default.
            types = {type(v) for v in default_value}
            if len(types) == 1 and types.pop() in (int, float, str):
                elem = type(default_value[0]).__name__
        if elem in ("int", "float", "str", "bool"):
            value = [_coerce_scalar(f"{name}[{i}]", v, elem, where) for i, v in enumerate(value)]
    return value


def check_common(preset: str, lang: str, runs_root: str = "runs", seed: int = 0,
                 device: str = "auto") -> Path:
    """Validate the parameters every stage shares and return the run directory.

    Example: `check_common("micro", "am")` -> `Path("runs/micro/am")`; `lang="xx"` raises
    ValueError naming the available languages.
    """
    if preset not in PRESETS and not Path(preset).is_dir() and preset.count("/") != 1:
        raise ValueError(f"parameter preset={preset!r}: not a preset ({', '.join(PRESETS)}), "
                         "a local model directory, or a hub id (owner/name)")
    if not is_count(seed):
        raise ValueError(f"parameter seed={seed!r}: expected a non-negative integer")
    if not isinstance(device, str) or not (device in ("auto", "cpu", "mps") or device.startswith("cuda")):
        raise ValueError(f"parameter device={device!r}: expected auto, cpu, mps, cuda or cuda:N")
    if lang not in LANGUAGES and not Path(lang).is_file():
        raise ValueError(f"parameter lang={lang!r}: not a shipped language "
                         f"({', '.join(LANGUAGES)}) nor a UTF-8 text file")
    return runs.run_dir(runs_root, preset, lang)


def check_vocab_params(num_new_tokens, init_method, compare_sizes, compare_methods, eval_chars) -> None:
    """Validate notebook 01's own parameters; a bad value raises ValueError naming the parameter.

    Example: `check_vocab_params(5000, "mean", [1000, 5000], ["mean", "merge"], 2000)`.
    """
    if not is_count(num_new_tokens, 1):
        raise ValueError(f"parameter num_new_tokens={num_new_tokens!r}: expected a positive integer")
    if init_method not in INIT_METHODS:
        raise ValueError(f"parameter init_method={init_method!r}: choose one of "
                         f"{', '.join(INIT_METHODS)}")
    if not isinstance(compare_sizes, (list, tuple)) or not all(is_count(v, 1) for v in compare_sizes):
        raise ValueError(f"parameter compare_sizes={compare_sizes!r}: expected a list of positive integers")
    if not isinstance(compare_methods, (list, tuple)):
        raise ValueError(f"parameter compare_methods={compare_methods!r}: expected a list such as "
                         f"[{', '.join(INIT_METHODS)}]")
    bad = [m for m in compare_methods if m not in INIT_METHODS]
    if bad:
        raise ValueError(f"parameter compare_methods: unknown {bad}; choose from {', '.join(INIT_METHODS)}")
    if not is_count(eval_chars, 1):
        raise ValueError(f"parameter eval_chars={eval_chars!r}: expected a positive integer")
