"""Loading ``topology.yaml`` into specs, with errors that name file, line and field.

The YAML is read with ``yaml.safe_load`` only, ``${VAR}`` and
``${VAR:-default}`` are replaced in string values, and the result is
structured with cattrs into the frozen attrs specs of ``_specs``. Every
problem found is reported, each as ``file:line: field.path: message``.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar, Union

import attrs
import cattrs
import yaml
from cattrs.errors import AttributeValidationNote, ClassValidationError, ForbiddenExtraKeysError

from ._actor import Actor, dispatch_table, init_signature, state_class
from ._checkpoint import open_store
from ._listen import parse_listen
from ._specs import (
    BackoffSpec,
    BreakerSpec,
    CheckpointPolicy,
    ChildSpec,
    FieldError,
    MailboxSpec,
    MetricsSpec,
    RateSpec,
    ResourceKind,
    ResourceSpec,
    RetrySpec,
    Seconds,
    SupervisorSpec,
    Topology,
    import_actor,
    import_resource,
    to_checkpoint_policy,
    to_seconds,
)
from ._tracing import tracing_unavailable
from .errors import TopologyError

__all__ = ["iter_children", "load_topology", "parse_topology"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ENTRY = Union[ChildSpec, SupervisorSpec]  # noqa: UP007
_SPECS = (
    Topology,
    SupervisorSpec,
    ChildSpec,
    MailboxSpec,
    BackoffSpec,
    BreakerSpec,
    MetricsSpec,
    RateSpec,
    RetrySpec,
)
_S = TypeVar("_S")


def _structure_entry(value: Any, _type: object) -> ChildSpec | SupervisorSpec:
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping with name and actor (or children); got {value!r}")
    if "children" in value:
        if "actor" in value:
            raise ValueError("an entry has either actor: (an actor) or children: (a supervisor)")
        return _converter.structure(value, SupervisorSpec)
    if "actor" not in value:
        raise ValueError("an entry needs actor: (an actor) or children: (a supervisor)")
    return _converter.structure(value, ChildSpec)


def _is_class_type(annotation: Any) -> bool:
    return typing.get_origin(annotation) is type


def _structure_int(value: Any, _type: object) -> int:
    # cattrs' own hook is int(value), which reads 2.5 as 2 and true as 1.
    # Strings stay accepted: ${VAR} interpolation yields them.
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"expected a whole number; got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a whole number; got {value!r}") from None


def _structure_str(value: Any, _type: object) -> str:
    # cattrs' own hook is str(value), which reads a list or a mapping as text.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a string; got {value!r}")
    return str(value)


def _structure_spec(value: Any, cl: type[_S]) -> _S:
    """Structure one spec class, reporting every bad field in it at once.

    cattrs' generated hook runs no attrs validator once a field fails to
    structure, and attrs stops at the first failing validator; here each field
    is structured and then validated on its own. Errors carry cattrs' notes,
    so ``_leaves`` reads them as it reads cattrs' own.
    """
    done, errors = _structure_fields(value, cl)
    errors.extend(_cross_checks(cl, value, done))
    if errors:
        raise ClassValidationError(f"While structuring {cl.__name__}", errors, cl)
    return cl(**vars(done))


def _structure_fields(value: Any, cl: type) -> tuple[types.SimpleNamespace, list[Exception]]:
    """The fields of ``cl`` structured from ``value`` (as attributes), and the errors."""
    if not isinstance(value, dict):
        raise TypeError(f"expected a mapping of {cl.__name__} fields; got {value!r}")
    fields = attrs.fields_dict(cl)
    errors: list[Exception] = [
        _noted(ForbiddenExtraKeysError("", cl, {key}), cl, key, None)
        for key in value
        if key not in fields
    ]
    done = types.SimpleNamespace()  # the fields structured so far; validators' ``self``
    for name, field in fields.items():
        type_: Any = field.type
        if name not in value:
            if field.default is attrs.NOTHING:
                errors.append(_noted(KeyError(name), cl, name, type_))
            continue
        try:
            setattr(done, name, _converter.structure(value[name], type_))
        except Exception as exc:
            errors.append(_noted(exc, cl, name, type_))
            continue
        errors.extend(_validate(field, done))
    return done, errors


def _structure_resources(value: Any, _type: object) -> dict[str, ResourceSpec]:
    """``resources:``: each entry's common fields and its kind's own options."""
    if not isinstance(value, dict):
        raise TypeError(f"expected a mapping of resource names to resources; got {value!r}")
    resources: dict[str, ResourceSpec] = {}
    errors: list[Exception] = []
    for name, entry in value.items():
        try:
            resources[str(name)] = _structure_resource(entry)
        except Exception as exc:
            errors.append(_noted(exc, Topology, str(name), ResourceSpec))
    if errors:
        raise ClassValidationError("While structuring resources", errors, dict)
    return resources


_COMMON = frozenset(attrs.fields_dict(ResourceSpec)) - {"options"}


def _structure_resource(value: Any) -> ResourceSpec:
    if not isinstance(value, dict):
        raise TypeError(f"expected a mapping with kind: and the resource's settings; got {value!r}")
    common = {key: item for key, item in value.items() if key in _COMMON}
    done, errors = _structure_fields(common, ResourceSpec)
    kind = getattr(done, "kind", None)
    options = None
    if kind is not None:
        options_type = attrs.resolve_types(kind.Options)
        known = attrs.fields_dict(options_type)
        extra = {key: item for key, item in value.items() if key not in _COMMON}
        for key in extra:
            if key not in known:
                own = ", ".join(known) or "none"
                errors.append(
                    FieldError(
                        str(key),
                        f"unknown key {key!r}; known keys: {', '.join(sorted(_COMMON))}; "
                        f"and for this kind: {own}",
                    )
                )
        found, option_errors = _structure_fields(
            {key: item for key, item in extra.items() if key in known}, options_type
        )
        errors.extend(option_errors)
        if not option_errors:
            try:
                options = options_type(**vars(found))
            except (TypeError, ValueError) as exc:
                errors.append(exc)
    if errors:
        raise ClassValidationError("While structuring ResourceSpec", errors, ResourceSpec)
    return ResourceSpec(**vars(done), options=options)


def _cross_checks(cl: type, value: dict[str, Any], done: types.SimpleNamespace) -> list[Exception]:
    """Checks that span fields, made even when some other field failed."""
    if (
        cl is ChildSpec
        and hasattr(done, "actor")
        and (hasattr(done, "args") or "args" not in value)
    ):
        problems = check_actor(
            done.actor, getattr(done, "args", {}), getattr(done, "checkpoint", "off")
        )
        return [FieldError(field, message) for field, message in problems]
    children = value.get("children")
    if cl is SupervisorSpec and not hasattr(done, "children") and isinstance(children, list):
        # A child failed to structure: its siblings' names are still compared.
        names = [types.SimpleNamespace(name=_raw_name(entry)) for entry in children]
        stand_in = types.SimpleNamespace(**vars(done), children=names)
        return _validate(attrs.fields(SupervisorSpec).children, stand_in)
    return []


def _raw_name(entry: object) -> object:
    name = entry.get("name") if isinstance(entry, dict) else None
    return object() if name is None else str(name)  # object(): equal to no other name


def _noted(exc: Exception, cl: type, name: str, type_: Any) -> Exception:
    exc.add_note(AttributeValidationNote(f"Structuring {cl.__qualname__} @ {name}", name, type_))
    return exc


def _validate(field: attrs.Attribute[Any], done: types.SimpleNamespace) -> list[Exception]:
    """Run one field's attrs validator; its complaint, if any, as a ``FieldError``."""
    if field.validator is None:
        return []
    try:
        field.validator(done, field, getattr(done, field.name))
    except FieldError as exc:
        return [exc]
    except AttributeError:
        # It reads another field that failed to structure: that one's error is
        # reported already, and this check waits for the next run.
        return []
    except (TypeError, ValueError) as exc:
        return [FieldError(field.name, str(exc))]
    return []


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(Seconds, lambda v, _t: to_seconds(v))
    converter.register_structure_hook_func(_is_class_type, lambda v, _t: import_actor(v))
    converter.register_structure_hook(CheckpointPolicy, lambda v, _t: to_checkpoint_policy(v))
    converter.register_structure_hook(_ENTRY, _structure_entry)
    converter.register_structure_hook(ResourceKind, lambda v, _t: import_resource(v))
    converter.register_structure_hook_func(
        lambda t: t == dict[str, ResourceSpec], _structure_resources
    )
    for spec in _SPECS:
        attrs.resolve_types(spec)
    attrs.resolve_types(ResourceSpec)
    # Every attrs class, the specs and resource kinds' Options alike.
    converter.register_structure_hook_func(attrs.has, _structure_spec)
    return converter


_converter = _make_converter()


def _line_map(text: str) -> dict[str, int]:
    """Map each field path (``$.supervisor.children[0].name``) to its 1-based line."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, path: str) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = f"{path}.{key.value}"
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{path}[{index}]")

    if root is not None:
        walk(root, "$")
    return lines


def _interpolate(value: Any, path: str, missing: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{path}.{k}", missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", missing) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match[1], match[2]
        value = os.environ.get(name)
        if value or (value is not None and default is None):
            return value
        if default is not None:  # as in the shell, :- also replaces an empty value
            return default
        missing.append(f"{path}\0environment variable {name} is not set and has no default")
        return match[0]

    return _ENV.sub(replace, value)


def _format_leaf(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        known = ", ".join(a.name for a in attrs.fields(exc.cl))
        keys = ", ".join(repr(key) for key in sorted(exc.extra_fields))
        return f"unknown key {keys}; known keys: {known}"
    if isinstance(exc, KeyError):
        return "required field is missing"
    if typing.get_origin(type_) is typing.Literal:
        return f"expected one of {', '.join(typing.get_args(type_))}"
    if isinstance(exc, (ValueError, TypeError)) and type_ in (float, str, bool):
        return f"expected {type_.__name__}; {exc}"
    return str(exc) or type(exc).__name__


def _leaves(exc: BaseException, path: str) -> Iterator[tuple[str, str]]:
    """Yield ``(field path, message)`` for every leaf error of a cattrs failure."""
    if isinstance(exc, FieldError):
        yield f"{path}.{exc.field}", str(exc)
        return
    if not isinstance(exc, BaseExceptionGroup):
        yield path, _format_leaf(exc, None)
        return
    for sub in exc.exceptions:
        notes = getattr(sub, "__notes__", [])
        note = next((n for n in notes if hasattr(n, "name") or hasattr(n, "index")), None)
        if note is not None and hasattr(note, "name"):
            sub_path, type_ = f"{path}.{note.name}", note.type
        elif note is not None:
            sub_path, type_ = f"{path}[{note.index}]", note.type
        else:
            sub_path, type_ = path, None
        if isinstance(sub, (BaseExceptionGroup, FieldError)):
            yield from _leaves(sub, sub_path)
        elif isinstance(sub, KeyError) and note is not None and hasattr(note, "name"):
            yield sub_path, "required field is missing"
        else:
            yield sub_path, _format_leaf(sub, type_)


def _locate(lines: dict[str, int], path: str) -> int:
    """The line of ``path``, or of its nearest ancestor the YAML has."""
    probe = path
    while probe not in lines and probe != "$":
        probe = probe.rsplit("[", 1)[0] if probe.endswith("]") else probe.rsplit(".", 1)[0]
    return lines.get(probe, 1)


def _report(source: str, lines: dict[str, int], path: str, message: str) -> str:
    field = path[2:] if path.startswith("$.") else "(top level)"
    return f"{source}:{_locate(lines, path)}: {field}: {message}"


def parse_topology(text: str, source: str = "<topology>") -> Topology:
    """Parse and validate topology YAML text.

    Raises:
        TopologyError: every problem found, each naming ``source``, the line
            and the field path.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise TopologyError([f"{source}:{line}: (yaml): {problem}"]) from None
    lines = _line_map(text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TopologyError([f"{source}:1: (top level): expected a mapping of topology fields"])
    missing: list[str] = []
    data = _interpolate(data, "$", missing)
    if missing:
        raise TopologyError([_report(source, lines, *entry.split("\0", 1)) for entry in missing])
    try:
        topology = _converter.structure(data, Topology)
    except Exception as exc:  # every failure, as one group
        leaves = sorted(_leaves(exc, "$"), key=lambda leaf: _locate(lines, leaf[0]))
        raise TopologyError([_report(source, lines, path, msg) for path, msg in leaves]) from None
    problems = list(unsupported(topology))
    if problems:
        raise TopologyError([_report(source, lines, path, msg) for path, msg in problems])
    return topology


def unsupported(topology: Topology) -> Iterator[tuple[str, str]]:
    """Yield ``(field path, message)`` for each valid field this version cannot run."""
    if topology.resources and topology.supervisor.name == "resources":
        yield (
            "$.supervisor.name",
            "'resources' names the supervisor of the resources; give the root another name",
        )
    why = tracing_unavailable() if topology.metrics.tracing else None
    if why is not None:
        yield "$.metrics.tracing", why
    if topology.metrics.listen is not None:
        try:
            parse_listen(topology.metrics.listen)
        except ValueError as exc:
            yield "$.metrics.listen", str(exc)

    if topology.store is not None:
        try:
            open_store(topology.store)
        except ValueError as exc:
            yield "$.store", str(exc)


def check_actor(
    actor: type[Actor[Any]], args: dict[str, Any], checkpoint: str | float = "off"
) -> Iterator[tuple[str, str]]:
    """Check what types cannot: the handlers are well-formed, ``args`` fit
    ``__init__``, and an actor that checkpoints has a state class."""
    if checkpoint != "off" and state_class(actor) is None:
        yield (
            "checkpoint",
            f"{actor.__qualname__} has no state class to checkpoint: declare it as "
            "Actor[YourState], or use checkpoint: off",
        )
    try:
        dispatch_table(actor)
    except TypeError as exc:
        yield "actor", str(exc)
    try:
        init_signature(actor).bind(**args)
    except TypeError as exc:
        yield "args", f"do not fit {actor.__qualname__}.__init__: {exc}"


def load_topology(path: str | os.PathLike[str]) -> Topology:
    """Read and validate a topology file.

    Raises:
        TopologyError: the file cannot be read, or is invalid.
    """
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError([f"{source}:0: (file): cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise TopologyError(
            [f"{source}:0: (file): not UTF-8 text (byte {exc.start}: {exc.reason})"]
        ) from None
    return parse_topology(text, source)


def iter_children(spec: SupervisorSpec, prefix: str = "") -> Iterator[tuple[str, ChildSpec]]:
    """Yield ``(path, spec)`` for every actor below ``spec``, depth first, in start order."""
    base = f"{prefix}{spec.name}"
    for child in spec.children:
        if isinstance(child, SupervisorSpec):
            yield from iter_children(child, f"{base}/")
        else:
            yield f"{base}/{child.name}", child
