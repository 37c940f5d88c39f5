"""Run configuration files: one file that reproduces a run (``lightkit fit --config run.toml``).

The layout, in TOML (JSON and YAML hold the same keys)::

    target = ["examples.digits"]      # the modules to collect
    ckpt_path = "last"                # optional

    [hparams]
    lr = 0.0003

    [trainer]
    max_epochs = 5
    precision = "bf16-mixed"
    callbacks = [{class_path = "lightkit.callbacks:EarlyStopping", init_args = {monitor = "val/loss"}}]

TOML has no null: a value left at a default of ``None`` is written as a comment; a value set
to ``None`` against another default is written as the string ``"none"``, which reading turns
back into ``None`` for every field that accepts ``None``. Reading TOML needs Python 3.11
(``tomllib``) or the ``tomli`` package on 3.10; YAML needs PyYAML.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightkit.errors import ConfigError, did_you_mean

FORMATS = ("toml", "json", "yaml")
_SUFFIXES = {".toml": "toml", ".json": "json", ".yaml": "yaml", ".yml": "yaml"}
NONE_TEXT = "none"


class Unset:
    """``None`` where ``None`` is the default: a comment in TOML, ``null`` elsewhere."""

    def __repr__(self) -> str:
        return "Unset()"


UNSET = Unset()


class Unwritable:
    """A value a file cannot hold (an object without a class path): written as a comment."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def format_of(path: str | Path) -> str:
    """``toml``, ``json`` or ``yaml`` from the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ConfigError(
            f"{path}: a config file ends in .toml, .json, .yaml or .yml.", code="bad-config-file"
        )
    return _SUFFIXES[suffix]


def read_config(path: str | Path) -> dict[str, Any]:
    """The mapping a config file holds.

    Raises:
        ConfigError: the file is missing, unreadable, not a mapping, or needs a parser that is
            not installed.
    """
    fmt = format_of(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror or exc}.", code="bad-config-file"
        ) from None
    try:
        if fmt == "json":
            data = json.loads(text)
        elif fmt == "toml":
            data = _toml_loads(text)
        else:
            data = _yaml_module().safe_load(text)
    except ConfigError:
        raise
    except Exception as exc:  # each parser has its own error type
        raise ConfigError(
            f"{path} is not valid {fmt.upper()}: {exc}", code="bad-config-file"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} holds a {type(data).__name__}; a config file holds a mapping "
            f"(target, ckpt_path, [hparams], [trainer]).",
            code="bad-config-file",
        )
    return data


def _toml_loads(text: str) -> Any:
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ModuleNotFoundError:
            raise ConfigError(
                "reading TOML needs Python 3.11 or the tomli package (pip install tomli); "
                "or give the config as JSON.",
                code="missing-dependency",
            ) from None
    return tomllib.loads(text)


def _yaml_module() -> Any:
    try:
        import yaml  # type: ignore[import-untyped,unused-ignore]
    except ModuleNotFoundError:
        raise ConfigError(
            "YAML config files need PyYAML (pip install pyyaml); or use TOML or JSON.",
            code="missing-dependency",
        ) from None
    return yaml


def dumps(data: Mapping[str, Any], fmt: str) -> str:
    """``data`` as a config file of format ``fmt``."""
    if fmt == "toml":
        return to_toml(data)
    plain = _without_unwritable(data)
    if fmt == "json":
        return json.dumps(plain, indent=2) + "\n"
    if fmt == "yaml":
        return str(_yaml_module().safe_dump(plain, sort_keys=False))
    raise ConfigError(f"unknown config format {fmt!r}; use one of {', '.join(FORMATS)}.")


def _without_unwritable(value: Any) -> Any:
    if isinstance(value, Unset):
        return None
    if isinstance(value, Mapping):
        return {
            k: _without_unwritable(v) for k, v in value.items() if not isinstance(v, Unwritable)
        }
    if isinstance(value, (list, tuple)):
        return [_without_unwritable(v) for v in value if not isinstance(v, Unwritable)]
    return value


# -- a small TOML writer ---------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if value is None or isinstance(value, Unset):
        return json.dumps(NONE_TEXT)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are valid TOML basic-string escapes
    if isinstance(value, Mapping):
        items = [
            f"{_toml_key(str(k))} = {_toml_value(v)}"
            for k, v in value.items()
            if not isinstance(v, Unwritable)
        ]
        return "{" + ", ".join(items) + "}" if items else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value if not isinstance(v, Unwritable)) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} to TOML")


def to_toml(data: Mapping[str, Any], header: str = "") -> str:
    """TOML text: scalar keys first, then one table per mapping value. ``Unwritable`` values
    become comments."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    for key, value in data.items():
        if key in tables:
            continue
        lines.append(_toml_line(key, value))
    for name, table in tables.items():
        lines.append("")
        lines.append(f"[{_toml_key(name)}]")
        for key, value in table.items():
            lines.append(_toml_line(key, value))
    return "\n".join(lines) + "\n"


def _toml_line(key: str, value: Any) -> str:
    if isinstance(value, Unwritable):
        return f"# {key} = {value.text}  (an object: not reproducible from a file)"
    if isinstance(value, Unset):
        return f"# {key} = none (the default)"
    return f"{_toml_key(key)} = {_toml_value(value)}"


# -- objects as class paths ------------------------------------------------------------------


def class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def init_args(obj: Any) -> dict[str, Any] | None:
    """The constructor arguments that rebuild ``obj`` (those that differ from their defaults),
    as plain data; ``None`` when they cannot be known or written.

    An attrs class gives its ``init`` fields; any other class its ``__init__`` parameters, read
    back from attributes of the same names (the convention scikit-learn's ``get_params`` relies
    on). A parameter with no such attribute, ``*args``/``**kwargs``, or a value that is not plain
    data makes the object unwritable rather than rebuilt without it.
    """
    import inspect

    import attrs

    cls = type(obj)
    owner = next((k for k in cls.__mro__ if "__init__" in vars(k)), object)
    if owner is object:
        return {}
    if "__attrs_attrs__" in vars(owner):  # the __init__ attrs wrote for these fields
        params = [
            (f.alias or f.name, f.name, _attrs_default(f, obj))
            for f in attrs.fields(owner)
            if f.init
        ]
    else:
        try:
            signature = inspect.signature(vars(owner)["__init__"])
        except (TypeError, ValueError):
            return None
        params = []
        for param in list(signature.parameters.values())[1:]:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                return None
            params.append((param.name, param.name, param.default))
    args: dict[str, Any] = {}
    missing = object()
    for arg, attribute, default in params:
        value = getattr(obj, attribute, missing)
        if value is missing:
            return None
        try:
            same = default is not inspect.Parameter.empty and bool(value == default)
        except Exception:
            same = False
        if same:
            continue
        plain = plain_value(value)
        if isinstance(plain, Unwritable):
            return None
        args[arg] = plain
    return args


def _attrs_default(field: Any, obj: Any) -> Any:
    import inspect

    import attrs

    default = field.default
    if default is attrs.NOTHING:
        return inspect.Parameter.empty
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return default.factory(obj) if default.takes_self else default.factory()
    return default


def object_ref(obj: Any) -> Any:
    """A file value that rebuilds ``obj``: ``"module:Class"``, or ``{"class_path": ...,
    "init_args": {...}}`` when some arguments differ from their defaults; ``Unwritable`` when
    its class cannot be imported or its arguments are not plain data (see :func:`init_args`)."""
    cls = type(obj)
    args = None
    if "<locals>" not in cls.__qualname__ and cls.__module__ != "__main__":
        args = init_args(obj)
    if args is None:
        return Unwritable(repr(obj))
    path = class_path(obj)
    return {"class_path": path, "init_args": args} if args else path


def build_object(ref: Any, kind: str) -> Any:
    """The object a reference names: ``"module:Class"``, ``"Class(arg=1)"`` (a bare name is
    looked up in ``lightkit.callbacks`` or ``lightkit.loggers``, by ``kind``), or
    ``{"class_path": ..., "init_args": {...}}`` as :func:`object_ref` writes it."""
    import ast
    import importlib

    if isinstance(ref, Mapping):
        if "class_path" not in ref:
            raise ConfigError(f"{dict(ref)!r} has no 'class_path'", code="bad-object-ref")
        path, kwargs = str(ref["class_path"]), dict(ref.get("init_args") or {})
    elif isinstance(ref, str):
        path, kwargs = ref.strip(), {}
        if path.endswith(")") and "(" in path:
            path, _, args = path.partition("(")
            try:
                call = ast.parse(f"f({args}", mode="eval").body
                assert isinstance(call, ast.Call) and not call.args
                kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
            except (SyntaxError, ValueError, AssertionError):
                raise ConfigError(
                    f"{ref!r}: arguments must be keyword=literal pairs, e.g. "
                    f"EarlyStopping(monitor='val/loss', patience=3)",
                    code="bad-object-ref",
                ) from None
    else:
        raise ConfigError(f"{ref!r} is not a class reference", code="bad-object-ref")
    path = SHORT_NAMES.get(kind, {}).get(path.lower(), path)
    module_name, _, qualname = path.rpartition(":")
    if not module_name:
        module_name = "lightkit.loggers" if kind == "logger" else "lightkit.callbacks"
        qualname = path
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        hint = ""
        if isinstance(exc, AttributeError) and "." not in qualname:
            module = importlib.import_module(module_name)
            hint = did_you_mean(qualname, [n for n in dir(module) if not n.startswith("_")])
        raise ConfigError(f"cannot import {path!r}: {exc}.{hint}", code="bad-object-ref") from None
    try:
        return obj(**kwargs)
    except Exception as exc:
        raise ConfigError(
            f"{path}(**{kwargs!r}) raised {type(exc).__name__}: {exc}", code="bad-object-ref"
        ) from None


#: Names a command line or file may use for lightkit's own classes.
SHORT_NAMES = {
    "logger": {
        "csv": "lightkit.loggers:CSVLogger",
        "tensorboard": "lightkit.loggers:TensorBoardLogger",
    },
    "callbacks": {},  # bare names are looked up in lightkit.callbacks
}


def plain_value(value: Any) -> Any:
    """``value`` as plain file data (paths as strings, enums as their values), or
    ``Unwritable``."""
    import enum

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return plain_value(value.value)
    if isinstance(value, (list, tuple)):
        items = [plain_value(v) for v in value]
        return Unwritable(repr(value)) if any(isinstance(i, Unwritable) for i in items) else items
    if isinstance(value, Mapping):
        out = {str(k): plain_value(v) for k, v in value.items()}
        return (
            Unwritable(repr(value)) if any(isinstance(v, Unwritable) for v in out.values()) else out
        )
    if type(value).__name__ == "dtype" and type(value).__module__ == "torch":
        return str(value)  # "torch.float16": the precision plugins read it back
    dump = getattr(value, "model_dump", None)  # a pydantic model: its fields, as validated back
    if callable(dump) and not isinstance(value, type):
        try:
            return plain_value(dump(mode="json"))
        except Exception:  # a field JSON cannot hold
            return Unwritable(repr(value))
    return Unwritable(repr(value))


# -- the run configuration -------------------------------------------------------------------

#: The fields that may hold objects (written by class path, not by value).
OBJECT_FIELDS = ("callbacks", "logger", "strategy", "precision")


def spec_targets(spec: Any) -> list[str] | None:
    """The modules whose registries hold the spec's functions, in order; ``None`` when a
    function does not come from a module's registry (an explicit ``lk.Registry``, ``__main__``)."""
    from lightkit.spec.registry import has_registry, registry_for
    from lightkit.utils.imports import file_target

    targets: list[str] = []
    for entry in spec.functions:
        module = getattr(entry.fn, "__module__", None)
        if not module or module == "__main__" or not has_registry(module):
            return None
        if not any(e.fn is entry.fn for e in registry_for(module).entries):
            return None
        target = file_target(module) or module
        if target not in targets:
            targets.append(target)
    return targets


def trainer_values(config: Any, refs: Mapping[int, Any] | None = None) -> dict[str, Any]:
    """Every ``TrainerConfig`` field as file data; objects as class paths (``refs`` maps an
    object's ``id`` to the reference it was built from)."""
    refs = refs or {}
    dumped = config.model_dump(mode="json")
    out: dict[str, Any] = {}
    for name in type(config).model_fields:
        value = getattr(config, name)
        if name in OBJECT_FIELDS and not _is_plain(value):
            items = value if isinstance(value, (list, tuple)) else [value]
            encoded = [refs.get(id(v)) or (v if _is_plain(v) else object_ref(v)) for v in items]
            out[name] = encoded if isinstance(value, (list, tuple)) else encoded[0]
        else:
            out[name] = dumped[name]
    return out


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return False


def absolute_file_target(target: str) -> str:
    """``tiny.py`` -> ``/abs/dir/tiny.py`` (``:attr`` kept); a module name is left as it is."""
    name, sep, attr = target, "", ""
    if ":" in target and not (len(target) > 1 and target[1] == ":"):  # not C:\\...
        name, sep, attr = target.partition(":")
    if not name.endswith(".py"):
        return target
    return f"{Path(name).resolve()}{sep}{attr}"


def run_config(
    spec: Any,
    config: Any,
    targets: Sequence[str] | None = None,
    ckpt_path: Any = None,
    refs: Mapping[int, Any] | None = None,
) -> dict[str, Any]:
    """The full effective configuration of a run: targets, hyperparameters, every trainer flag."""
    out: dict[str, Any] = {}
    found = list(targets) if targets else spec_targets(spec)
    if found:
        out["target"] = found
    if ckpt_path is not None:
        out["ckpt_path"] = str(ckpt_path)
    hparams: dict[str, Any] = {}
    for name, field in spec.hparams_model.model_fields.items():
        hparams[name] = _unset_if_default_none(plain_value(getattr(spec.hparams, name)), field)
    out["hparams"] = hparams
    fields = type(config).model_fields
    out["trainer"] = {
        k: _unset_if_default_none(v, fields[k]) for k, v in trainer_values(config, refs).items()
    }
    return out


def _unset_if_default_none(value: Any, field: Any) -> Any:
    if value is None and field.get_default(call_default_factory=True) is None:
        return UNSET
    return value


RUN_FILE_HEADER = "lightkit run configuration: `lightkit {command} --config {name}` runs it again."


def write_run_config(
    run_dir: Path, spec: Any, config: Any, stage: str = "fit", ckpt_path: str | None = None
) -> Path:
    """Write ``config.toml`` (targets, hyperparameters, trainer flags and the checkpoint the
    run started from) into a run folder."""
    path = Path(run_dir) / "config.toml"
    # A run started from the command line names its targets as given there (a registry
    # target such as `pkg.mod:reg` included; a file by its absolute path, so the file runs
    # from any folder) and its objects by the references they came from. The checkpoint comes
    # from the entry point, from Python as from the command line.
    targets = getattr(config, "_cli_targets", None)
    if targets:
        targets = [absolute_file_target(t) for t in targets]
    refs = {id(obj): ref for obj, ref in getattr(config, "_cli_refs", ())}
    data = run_config(spec, config, targets, ckpt_path, refs=refs)
    header = RUN_FILE_HEADER.format(command=stage, name=path.name)
    if "target" not in data:
        header += (
            "\nThe functions do not all come from importable modules' registries: add\n"
            'target = ["module", ...] naming what to collect.'
        )
        script = _main_script(spec)
        if script is not None:  # a script run as `python train.py`: its own file
            header += (
                f'\nThey come from the script {script}: target = ["{script}"] reruns it\n'
                f'once its own fit call is under `if __name__ == "__main__":`.'
            )
    path.write_text(to_toml(data, header=header))
    return path


def _main_script(spec: Any) -> str | None:
    """The file of ``__main__`` when the spec's functions come from a script run as
    ``python train.py`` (not an interactive session); else ``None``."""
    import sys

    if not any(getattr(e.fn, "__module__", None) == "__main__" for e in spec.functions):
        return None
    file = getattr(sys.modules.get("__main__"), "__file__", None)
    return str(Path(file).resolve()) if file and str(file).endswith(".py") else None
