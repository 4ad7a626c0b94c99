"""Loading ``topology.yaml`` into specs, with errors that name file, line and field.

The YAML is read as plain data (``yaml.safe_load``'s types) by ``_yaml``,
which bounds its size and refuses cycles and duplicate keys; ``${VAR}`` and
``${VAR:-default}`` are replaced in string values, and the result is
structured with cattrs into the frozen attrs specs of ``_specs``. Every
problem found is reported, each as ``file:line: field.path: message``, in
words a user of the file can act on: no Python type names or tracebacks.
"""

from __future__ import annotations

import datetime
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar, Union

import attrs
import cattrs
import cattrs.cols
import yaml
from cattrs.errors import AttributeValidationNote, ClassValidationError, ForbiddenExtraKeysError

from ._actor import Actor, dispatch_table, init_signature, needs_args, state_class
from ._checkpoint import RESERVED_PREFIX, open_store
from ._listen import parse_listen
from ._lock_backends import check_locks_url
from ._specs import (
    BackoffSpec,
    BreakerSpec,
    BudgetSpec,
    CheckpointPolicy,
    ChildSpec,
    ClusterSpec,
    FieldError,
    MailboxSpec,
    MetricsSpec,
    PoolSpec,
    RateSpec,
    ResourceKind,
    ResourceSpec,
    RetrySpec,
    Seconds,
    StepSpec,
    SupervisorSpec,
    Topology,
    WorkflowSpec,
    import_actor,
    import_resource,
    to_checkpoint_policy,
    to_seconds,
)
from ._tracing import tracing_unavailable
from ._yaml import Refused, load, locate, syntax_problem
from .errors import TopologyError
from .workflow import JOURNAL_PREFIX, template_problems

__all__ = ["iter_children", "load_topology", "parse_topology"]

# A reference runs from ${ to the first }; _VARIABLE is what a well-formed one holds.
_REFERENCE = re.compile(r"\$\{(?P<body>[^}]*)(?P<end>\}?)")
_VARIABLE = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)
_NAME_START = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MESSAGE_MAX = 400  # characters of one error message; the rest is elided
_ENTRY = Union[ChildSpec, SupervisorSpec]  # noqa: UP007
_SPECS = (
    Topology,
    ClusterSpec,
    SupervisorSpec,
    ChildSpec,
    MailboxSpec,
    BackoffSpec,
    BreakerSpec,
    BudgetSpec,
    MetricsSpec,
    PoolSpec,
    RateSpec,
    RetrySpec,
    StepSpec,
    WorkflowSpec,
)
_S = TypeVar("_S")
# In workflow templates, ${inputs.NAME} and ${steps.STEP.result} are the
# workflow's own references, resolved at each run, not environment variables.
_WORKFLOW_REFERENCE = re.compile(r"(?:inputs|steps)\.")


def _show(value: object) -> str:
    """``value`` as a message quotes it: its repr, cut short, and a date as YAML wrote it."""
    if isinstance(value, datetime.date):
        return f"{value.isoformat()} (YAML reads it as a date: quote it for a string)"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:56]} ..."


def _did_you_mean(key: object, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the known key nearest ``key``, or nothing."""
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _structure_entry(value: Any, _type: object) -> ChildSpec | SupervisorSpec:
    if not isinstance(value, dict):
        raise ValueError(
            f"expected a mapping with name and actor (or children); got {_show(value)}"
        )
    if "children" in value:
        if "actor" in value:
            raise ValueError("an entry has either actor: (an actor) or children: (a supervisor)")
        return _converter.structure(value, SupervisorSpec)
    if "actor" not in value:
        raise ValueError(
            "an entry needs actor: (an actor) or children: (a supervisor)"
            + "".join(
                f"; it has {key!r}{hint}"
                for key in value
                if (hint := _did_you_mean(key, ("actor", "children")))
            )
        )
    return _converter.structure(value, ChildSpec)


def _is_class_type(annotation: Any) -> bool:
    return typing.get_origin(annotation) is type


def _structure_int(value: Any, _type: object) -> int:
    # cattrs' own hook is int(value), which reads 2.5 as 2 and true as 1.
    # Strings stay accepted: ${VAR} interpolation yields them.
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"expected a whole number; got {_show(value)}")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"expected a whole number; got {_show(value)}") from None


def _structure_float(value: Any, _type: object) -> float:
    # cattrs' own hook is float(value): true is 1.0, and a list names Python types.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number; got {_show(value)}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number; got {_show(value)}") from None
    if math.isnan(number):  # NaN passes every comparison a validator makes
        raise ValueError(f"expected a number; got {_show(value)}")
    return number


_BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _structure_bool(value: Any, _type: object) -> bool:
    # Without this hook cattrs takes bool for an int (its subclass). Strings
    # are YAML's boolean words, as ${VAR} interpolation yields them.
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _BOOLEANS:
        return _BOOLEANS[value.lower()]
    raise ValueError(f"expected true or false; got {_show(value)}")


def _structure_str(value: Any, _type: object) -> str:
    # cattrs' own hook is str(value), which reads a list or a mapping as text.
    if isinstance(value, bool):
        raise ValueError(
            f"expected a string; got {value!r} (YAML reads a bare yes, no, on, off, true "
            "or false as a boolean: quote it)"
        )
    if not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a string; got {_show(value)}")
    return str(value)


def _scalar(
    convert: Callable[[Any], _S], expected: str, *accepted: type
) -> Callable[[Any, Any], _S]:
    """A hook calling ``convert`` on an instance of ``accepted``, and refusing
    anything else with ``expected`` and the value (which ``convert`` would
    quote whole, or read as a class)."""

    def structure(value: Any, _type: object) -> _S:
        if not isinstance(value, accepted):
            raise ValueError(f"{expected} {_show(value)}")
        return convert(value)

    return structure


def _is_list(type_: Any) -> bool:
    return typing.get_origin(type_) is list


def _is_dict(type_: Any) -> bool:
    return typing.get_origin(type_) is dict


def _only(kind: type, noun: str, factory: Any) -> Callable[[Any, cattrs.BaseConverter], Any]:
    """A hook factory: cattrs' own ``factory``, but only for a YAML ``kind``
    (cattrs takes any iterable for a list and calls ``.items()`` on
    anything for a dict)."""

    def hook(type_: Any, converter: cattrs.BaseConverter) -> Callable[[Any, Any], Any]:
        structure_items = factory(type_, converter)

        def structure(value: Any, type_: Any) -> Any:
            if not isinstance(value, kind):
                raise ValueError(f"expected {noun}; got {_show(value)}")
            return structure_items(value, type_)

        return structure

    return hook


_list_hook = _only(list, "a list", cattrs.cols.list_structure_factory)
_dict_hook = _only(dict, "a mapping", cattrs.cols.mapping_structure_factory)


# Fields whose shape is worth a sentence of its own when it is wrong.
_SHAPES: dict[tuple[type, str], tuple[type, str]] = {
    (ChildSpec, "args"): (dict, "a mapping of keyword arguments for the actor (name: value)"),
    (ChildSpec, "tags"): (list, "a list of tags, e.g. [review, fast]"),
    (SupervisorSpec, "children"): (
        list,
        "a list of entries, each a mapping with name and actor (or children)",
    ),
}


def _structure_field(value: Any, cl: type, name: str, type_: Any) -> Any:
    shape = _SHAPES.get((cl, name))
    if shape is not None and not isinstance(value, shape[0]):
        raise ValueError(f"expected {shape[1]}; got {_show(value)}")
    return _converter.structure(value, type_)


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
        raise TypeError(f"expected a mapping of {cl.__name__} fields; got {_show(value)}")
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
            setattr(done, name, _structure_field(value[name], cl, name, type_))
        except Exception as exc:
            errors.append(_noted(exc, cl, name, type_))
            continue
        errors.extend(_validate(field, done))
    return done, errors


def _structure_resources(value: Any, _type: object) -> dict[str, ResourceSpec]:
    """``resources:``: each entry's common fields and its kind's own options."""
    if not isinstance(value, dict):
        raise TypeError(f"expected a mapping of resource names to resources; got {_show(value)}")
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
        raise TypeError(
            f"expected a mapping with kind: and the resource's settings; got {_show(value)}"
        )
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
                hint = _did_you_mean(key, [*_COMMON, *known])
                errors.append(
                    FieldError(
                        str(key),
                        f"unknown key {key!r}{hint}; known keys: {', '.join(sorted(_COMMON))}; "
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
        problems = list(
            check_actor(done.actor, getattr(done, "args", {}), getattr(done, "checkpoint", "off"))
        )
        mailbox = getattr(done, "mailbox", None)
        if mailbox is not None and mailbox.durable and getattr(done, "pool", None) is not None:
            problems.append(
                ("mailbox", "a pool cannot have a durable mailbox (give it to a single actor)")
            )
        elif mailbox is not None and mailbox.durable and getattr(done, "concurrency", 1) != 1:
            problems.append(
                (
                    "concurrency",
                    "a durable mailbox needs concurrency: 1 (its tells are applied one "
                    "after the other, in stream order)",
                )
            )
        elif (
            mailbox is not None
            and mailbox.durable
            and getattr(done, "checkpoint", "off") != "message"
        ):
            problems.append(
                (
                    "checkpoint",
                    "a durable mailbox needs checkpoint: message (each tell is acknowledged "
                    "once its handler's state is written, with the tell's stream sequence)",
                )
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
    # Later registrations take precedence: the generic list and dict hooks first.
    converter.register_structure_hook_factory(_is_list, _list_hook)
    converter.register_structure_hook_factory(_is_dict, _dict_hook)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(str, _structure_str)
    # The wording of each refusal is that of the converter's own.
    converter.register_structure_hook(
        Seconds,
        _scalar(to_seconds, "expected a duration such as 5, 500ms, 5s or 2m, got", int, float, str),
    )
    converter.register_structure_hook_func(
        _is_class_type,
        _scalar(import_actor, "expected an import path 'package.module:Class', got", str, type),
    )
    converter.register_structure_hook(
        CheckpointPolicy,
        _scalar(
            to_checkpoint_policy,
            "expected off, message, manual or a period such as 30s, got",
            int,
            float,
            str,
        ),
    )
    converter.register_structure_hook(_ENTRY, _structure_entry)
    converter.register_structure_hook(
        ResourceKind,
        _scalar(
            import_resource,
            "expected postgres, llm, mcp or an import path 'package.module:Class'; got",
            str,
            type,
        ),
    )
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


def _interpolate(value: Any, path: str, problems: list[tuple[str, str]]) -> Any:
    """``value`` with ``${...}`` replaced in its strings; each bad reference in ``problems``."""
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{path}.{k}", problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        if path.startswith("$.workflows.") and _WORKFLOW_REFERENCE.match(match["body"]):
            return match[0]
        variable = _VARIABLE.fullmatch(match["body"])
        why = _malformed(match, variable)
        if why is not None or variable is None:
            reference = _show(match[0]) if len(match[0]) <= 40 else repr(f"{match[0][:36]} ...")
            problems.append(
                (
                    path,
                    f"malformed environment variable reference {reference}: {why}; "
                    "write ${NAME} or ${NAME:-default}",
                )
            )
            return match[0]
        name, default = variable["name"], variable["default"]
        value = os.environ.get(name)
        if value or (value is not None and default is None):
            return value
        if default is not None:  # as in the shell, :- also replaces an empty value
            return default
        problems.append((path, f"environment variable {name} is not set and has no default"))
        return match[0]

    return _REFERENCE.sub(replace, value)


def _malformed(reference: re.Match[str], variable: re.Match[str] | None) -> str | None:
    """Why a ``${...}`` reference is not ``${NAME}`` nor ``${NAME:-default}``, if it is not."""
    body = reference["body"]
    if not reference["end"]:
        return "it has no closing '}'"
    if variable is None:
        start = _NAME_START.match(body)
        if start is None:
            return "a variable name is a letter or '_', then letters, digits or '_'"
        return f"after the name {start[0]}, only :-default may follow"
    if "${" in (variable["default"] or ""):
        return "a default cannot hold another reference, and ends at the first '}'"
    return None


def _format_leaf(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [a.name for a in attrs.fields(exc.cl)]
        keys = ", ".join(repr(key) for key in sorted(exc.extra_fields, key=str))
        hint = _did_you_mean(next(iter(exc.extra_fields)), known)
        return f"unknown key {keys}{hint}; known keys: {', '.join(known)}"
    if isinstance(exc, KeyError):
        return "required field is missing"
    if typing.get_origin(type_) is typing.Literal:
        return f"expected one of {', '.join(map(str, typing.get_args(type_)))}"
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
        elif note is not None and isinstance(note.index, str):  # a mapping's key
            sub_path, type_ = f"{path}.{note.index}", note.type
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


def _field(path: str) -> str:
    return path[2:] if path.startswith("$.") else "(top level)"


def _report(source: str, lines: dict[str, int], path: str, message: str) -> str:
    if len(message) > _MESSAGE_MAX:
        message = f"{message[: _MESSAGE_MAX - 4]} ..."
    return f"{source}:{locate(lines, path)}: {_field(path)}: {message}"


def _read(text: str, source: str) -> tuple[Any, dict[str, int]]:
    """The YAML data of ``text`` and the line of each field path in it."""
    try:
        document = load(text)
    except Refused as exc:
        raise TopologyError(
            [f"{source}:{p.line}: {_field(p.path)}: {p.message}" for p in exc.problems]
        ) from None
    except yaml.YAMLError as exc:
        line, problem = syntax_problem(exc, text)
        raise TopologyError([f"{source}:{line}: (yaml): {problem}"]) from None
    return document.data, document.lines


def parse_topology(text: str, source: str = "<topology>") -> Topology:
    """Parse and validate topology YAML text.

    Raises:
        TopologyError: every problem found, each naming ``source``, the line
            and the field path.
    """
    data, lines = _read(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TopologyError([f"{source}:1: (top level): expected a mapping of topology fields"])
    references: list[tuple[str, str]] = []
    data = _interpolate(data, "$", references)
    if references:
        raise TopologyError([_report(source, lines, *problem) for problem in references])
    try:
        topology = _converter.structure(data, Topology)
    except Exception as exc:  # every failure, as one group
        leaves = sorted(_leaves(exc, "$"), key=lambda leaf: locate(lines, leaf[0]))
        raise TopologyError([_report(source, lines, path, msg) for path, msg in leaves]) from None
    problems = sorted(unsupported(topology), key=lambda problem: locate(lines, problem[0]))
    if problems:
        raise TopologyError([_report(source, lines, path, msg) for path, msg in problems])
    return topology


def unsupported(topology: Topology) -> Iterator[tuple[str, str]]:
    """Yield ``(field path, message)`` for each valid field this version cannot run."""
    if topology.supervisor.name == RESERVED_PREFIX.rstrip("/"):
        yield (
            "$.supervisor.name",
            f"{topology.supervisor.name!r} names the runtime's own records in the store; "
            "give the root another name",
        )
    yield from _unpriced_budgets(topology)
    if topology.resources and topology.supervisor.name == "resources":
        yield (
            "$.supervisor.name",
            "'resources' names the supervisor of the resources; give the root another name",
        )
    if f"{topology.supervisor.name}/" == JOURNAL_PREFIX:
        yield (
            "$.supervisor.name",
            "'workflow' names the workflow journals in the checkpoint store; "
            "give the root another name",
        )
    yield from workflow_problems(topology)
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
    if topology.locks is not None:
        try:
            check_locks_url(topology.locks)
        except ValueError as exc:
            yield "$.locks", str(exc)
    yield from _cluster_problems(topology)


def workflow_problems(topology: Topology) -> Iterator[tuple[str, str]]:
    """``(field path, message)`` for each workflow template that cannot run:
    a cycle, an unknown step or agent, a message type that does not import
    or a field it does not have, a reference to an unknown input or to a
    step that does not run first."""
    if not topology.workflows:
        return
    agents = {path for path, _ in iter_children(topology.supervisor)}
    agents |= {f"resources/{name}" for name in topology.resources}
    for name, spec in topology.workflows.items():
        for field, message in template_problems(spec, agents):
            yield f"$.workflows.{name}.{field}", message


def _unpriced_budgets(topology: Topology) -> Iterator[tuple[str, str]]:
    """A resource budget in dollars on a resource that prices no model
    (dollars would never be counted)."""
    for name, spec in topology.resources.items():
        budget = spec.budget
        pricing = getattr(spec.options, "pricing", None)
        if budget is not None and budget.dollars is not None and not pricing:
            yield (
                f"$.resources.{name}.budget.dollars",
                "this resource has no pricing:, so it counts no dollars: add "
                "pricing: {MODEL: {input: ..., output: ...}} (dollars per million tokens), "
                "or limit tokens instead",
            )


def _cluster_problems(topology: Topology) -> Iterator[tuple[str, str]]:
    """A cluster keeps its checkpoints in PostgreSQL and reaches NATS; a
    durable mailbox needs a cluster."""
    if topology.cluster is None:
        for field in _durable_mailboxes(topology.supervisor, "$.supervisor"):
            yield (
                field,
                "a durable mailbox needs cluster: (its tells go through a NATS JetStream "
                "stream); without one, use checkpoint: message and a plain mailbox",
            )
        return
    store = topology.store or ""
    if not store.startswith(("postgresql://", "postgres://")):
        yield (
            "$.store" if topology.store is not None else "$.cluster",
            "a cluster needs a PostgreSQL store (store: postgresql://...): every node "
            "must read the checkpoints of the units it takes over",
        )
    if not topology.cluster.nats.startswith(("nats://", "tls://")):
        yield "$.cluster.nats", f"expected a nats:// or tls:// URL; got {topology.cluster.nats!r}"


def _durable_mailboxes(spec: SupervisorSpec, at: str) -> Iterator[str]:
    """The field path of each ``mailbox: {durable: true}`` below ``spec``."""
    for i, child in enumerate(spec.children):
        if isinstance(child, SupervisorSpec):
            yield from _durable_mailboxes(child, f"{at}.children[{i}]")
        elif child.mailbox.durable:
            yield f"{at}.children[{i}].mailbox.durable"


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
        if args or needs_args(actor):
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
