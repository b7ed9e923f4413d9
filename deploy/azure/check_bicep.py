"""Offline checks of the Bicep files for when the real Bicep compiler is not available.

NOT a substitute for `bicep build` / `az bicep build` (type checking, scopes, functions, what ARM
accepts): .ci/check-deploy.sh runs the real compiler whenever it is on PATH and says loudly when it
is not. What this does instead, with tools that install from PyPI and run without network:

1. syntax: every .bicep file parses with the tree-sitter Bicep grammar (tree-sitter-bicep);
2. shapes: in every resource body, each property name exists in Azure's own model of that resource
   type, taken from the Azure SDK for Python (azure-mgmt-*, generated from the same REST API specs
   as ARM), recursively through objects and arrays; literal values are checked against scalar
   types and enums (enums only warn: ARM enums are open strings);
3. parameters: main.bicepparam sets only parameters main.bicep declares, and every parameter
   without a default.

Usage: python check_bicep.py <dir with main.bicep>   (exit 1 on any error)
"""

from __future__ import annotations

import importlib
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

# resource type -> (SDK models module, model class). The Bicep files' API versions are reported next to
# the SDK's, so a reader sees what was compared with what.
MODELS: dict[str, tuple[str, str]] = {
    "Microsoft.App/containerApps": ("azure.mgmt.appcontainers.models", "ContainerApp"),
    "Microsoft.App/managedEnvironments": ("azure.mgmt.appcontainers.models", "ManagedEnvironment"),
    "Microsoft.OperationalInsights/workspaces": ("azure.mgmt.loganalytics.models", "Workspace"),
    "Microsoft.ManagedIdentity/userAssignedIdentities": ("azure.mgmt.msi.v2024_11_30.models", "Identity"),
    "Microsoft.Authorization/roleAssignments": (
        "azure.mgmt.authorization.v2022_04_01.models",
        "RoleAssignmentCreateParameters",
    ),
}
# Bicep's own resource keywords, not part of the ARM resource body.
BICEP_RESOURCE_KEYS = {"name", "scope", "parent", "dependsOn"}


# --- shapes: a small common view of the two SDK model styles ------------------------------------


@dataclass
class Shape:
    kind: str  # "model" | "list" | "dict" | "str" | "int" | "float" | "bool" | "any"
    name: str = ""
    item: Shape | None = None  # list / dict values
    fields: dict[str, Shape] = field(default_factory=dict)  # model
    enum: tuple[str, ...] = ()


_SCALARS = {str: "str", int: "int", float: "float", bool: "bool"}


def _typespec_shape(tp: typing.Any, models: typing.Any, seen: dict[type, Shape]) -> Shape:
    """Shape of an annotation in a typespec-generated SDK (azure.mgmt.* with _utils/model_base)."""
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin is typing.Union:
        enums = [a for a in args if isinstance(a, type) and issubclass(a, str) and hasattr(a, "__members__")]
        others = [a for a in args if a not in enums and a is not str]
        if others:
            return _typespec_shape(others[0], models, seen)
        values = tuple(v.value for e in enums for v in e)  # type: ignore[attr-defined]
        return Shape("str", enum=values)
    if origin in (list, typing.List):  # noqa: UP006
        return Shape("list", item=_typespec_shape(args[0], models, seen))
    if origin in (dict, typing.Dict):  # noqa: UP006
        return Shape("dict", item=_typespec_shape(args[1], models, seen))
    if isinstance(tp, type) and issubclass(tp, str) and hasattr(tp, "__members__"):
        return Shape("str", enum=tuple(v.value for v in tp))  # type: ignore[attr-defined]
    if tp in _SCALARS:
        return Shape(_SCALARS[tp])
    if isinstance(tp, type) and hasattr(tp, "_attr_to_rest_field") or (
        isinstance(tp, type) and hasattr(tp, "__mro__") and any(c.__name__ == "Model" for c in tp.__mro__)
    ):
        if tp in seen:
            return seen[tp]
        shape = Shape("model", name=tp.__name__)
        seen[tp] = shape
        tp.__new__(tp)  # makes model_base compute _attr_to_rest_field for the class
        hints = typing.get_type_hints(tp, globalns={**vars(sys.modules[tp.__module__]), "_models": models})
        for attr, rest_field in tp._attr_to_rest_field.items():
            shape.fields[rest_field._rest_name] = _typespec_shape(hints.get(attr, typing.Any), models, seen)
        return shape
    return Shape("any")


def _msrest_shape(type_name: str, models: typing.Any, seen: dict[str, Shape]) -> Shape:
    """Shape of an msrest `_attribute_map` type string ('str', '[Container]', '{str}', 'Model')."""
    if type_name.startswith("["):
        return Shape("list", item=_msrest_shape(type_name[1:-1], models, seen))
    if type_name.startswith("{"):
        return Shape("dict", item=_msrest_shape(type_name[1:-1], models, seen))
    scalar = {"str": "str", "int": "int", "long": "int", "float": "float", "bool": "bool"}.get(type_name)
    if scalar:
        return Shape(scalar)
    cls = getattr(models, type_name, None)
    if cls is None or not hasattr(cls, "_attribute_map"):
        return Shape("any")
    if type_name in seen:
        return seen[type_name]
    shape = Shape("model", name=type_name)
    seen[type_name] = shape
    for spec in cls._attribute_map.values():
        parts = [p.replace("\\.", ".") for p in re.split(r"(?<!\\)\.", spec["key"])]
        node = shape
        for part in parts[:-1]:  # flattened "properties.x" keys become nested objects
            node = node.fields.setdefault(part, Shape("model", name=f"{node.name}.{part}"))
        node.fields[parts[-1]] = _msrest_shape(spec["type"], models, seen)
    return shape


def model_shape(module_name: str, class_name: str) -> tuple[Shape, str]:
    models = importlib.import_module(module_name)
    cls = getattr(models, class_name)
    package = importlib.import_module(module_name.rsplit(".models", 1)[0])
    api = getattr(package, "_API_VERSION", None) or _api_version_of(module_name)
    if hasattr(cls, "_attribute_map"):
        return _msrest_shape(class_name, models, {}), api
    return _typespec_shape(cls, models, {}), api


def _api_version_of(module_name: str) -> str:
    match = re.search(r"\.v(\d{4})_(\d{2})_(\d{2})(_preview)?\.", module_name + ".")
    if match:
        return f"{match[1]}-{match[2]}-{match[3]}" + ("-preview" if match[4] else "")
    top = module_name.split(".models")[0]
    for candidate in ("_configuration",):
        try:
            source = Path(importlib.import_module(f"{top}.{candidate}").__file__ or "").read_text()
        except ImportError:
            continue
        found = re.search(r'api_version[^=]*=\s*kwargs\.pop\("api_version",\s*"([^"]+)"', source)
        if found:
            return found[1]
    return "?"


# --- walking the Bicep tree ----------------------------------------------------------------------


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)


def _text(node: Node, src: bytes) -> str:
    return src[node.start_byte : node.end_byte].decode()


def _key(prop: Node, src: bytes) -> str:
    key = prop.named_children[0]
    text = _text(key, src)
    return text[1:-1] if key.type == "string" else text


def _literal_kind(value: Node, src: bytes) -> str | None:
    if value.type == "number":
        return "int"
    if value.type == "boolean":
        return "bool"
    if value.type == "string" and not any(c.type == "interpolation" for c in value.named_children):
        return "str"
    return None  # an expression: its type is the compiler's business


def _walk(value: Node, shape: Shape, path: str, src: bytes, where: str, report: Report) -> None:
    line = value.start_point[0] + 1
    if shape.kind == "any":
        return
    if value.type == "object":
        if shape.kind == "dict":
            for prop in (c for c in value.named_children if c.type == "object_property"):
                _walk(prop.named_children[-1], shape.item or Shape("any"), f"{path}.{_key(prop, src)}", src, where, report)
        elif shape.kind == "model":
            for prop in (c for c in value.named_children if c.type == "object_property"):
                key = _key(prop, src)
                if key not in shape.fields:
                    known = ", ".join(sorted(shape.fields))
                    report.errors.append(f"{where}:{prop.start_point[0] + 1}: {path}.{key}: no such property in {shape.name} (known: {known})")
                    continue
                _walk(prop.named_children[-1], shape.fields[key], f"{path}.{key}", src, where, report)
        else:
            report.errors.append(f"{where}:{line}: {path}: an object where the model has {shape.kind}")
    elif value.type == "array":
        if shape.kind != "list":
            report.errors.append(f"{where}:{line}: {path}: an array where the model has {shape.kind}")
            return
        for i, item in enumerate(c for c in value.named_children if c.type not in ("comment",)):
            _walk(item, shape.item or Shape("any"), f"{path}[{i}]", src, where, report)
    else:
        kind = _literal_kind(value, src)
        if kind is None:
            return
        expected = {"float": ("int", "float")}.get(shape.kind, (shape.kind,))
        if kind not in expected:
            report.errors.append(f"{where}:{line}: {path}: a literal {kind} where the model has {shape.kind}")
        elif kind == "str" and shape.enum:
            literal = _text(value, src)[1:-1]
            if literal.lower() not in {e.lower() for e in shape.enum}:
                report.warnings.append(f"{where}:{line}: {path}: '{literal}' is not one of {', '.join(shape.enum)}")


def check_file(path: Path, parser: Parser, shapes: dict[str, tuple[Shape, str]], report: Report) -> None:
    src = path.read_bytes()
    tree = parser.parse(src)
    problems: list[Node] = []

    def find(node: Node) -> None:
        if node.type == "ERROR" or node.is_missing:
            problems.append(node)
        for child in node.children:
            find(child)

    find(tree.root_node)
    for node in problems:
        row, col = node.start_point
        report.errors.append(f"{path}:{row + 1}:{col + 1}: syntax: {'missing' if node.is_missing else 'unexpected'} {_text(node, src)[:40]!r}")
    for decl in (c for c in tree.root_node.named_children if c.type == "resource_declaration"):
        type_node = next(c for c in decl.named_children if c.type == "string")
        rtype, _, api = _text(type_node, src)[1:-1].partition("@")
        symbol = decl.named_children[0].type == "identifier" and _text(decl.named_children[0], src)
        body = next((c for c in decl.named_children if c.type == "object"), None)
        existing = any(c.type == "existing" for c in decl.children)
        label = f"{path.name}: {symbol} ({rtype}@{api}{', existing' if existing else ''})"
        if existing or body is None:
            report.checked.append(f"{label}: reference only, body not checked")
            continue
        if rtype not in shapes:
            report.warnings.append(f"{label}: no SDK model mapped, body not checked")
            continue
        shape, sdk_api = shapes[rtype]
        top = Shape("model", name=shape.name, fields={**shape.fields, **{k: Shape("any") for k in BICEP_RESOURCE_KEYS}})
        before = len(report.errors)
        _walk(body, top, symbol or rtype, src, str(path), report)
        verdict = "ok" if len(report.errors) == before else "ERRORS"
        report.checked.append(f"{label}: property names vs SDK model {shape.name} (api {sdk_api}): {verdict}")


def check_params(bicep: Path, bicepparam: Path, parser: Parser, report: Report) -> None:
    src = bicep.read_bytes()
    tree = parser.parse(src)
    declared: dict[str, bool] = {}
    for decl in (c for c in tree.root_node.named_children if c.type == "parameter_declaration"):
        name = _text(decl.named_children[0], src)
        declared[name] = any(c.type == "=" for c in decl.children)  # has a default
    text = bicepparam.read_text()
    if not re.search(rf"^using\s+'\./{re.escape(bicep.name)}'", text, re.M):
        report.errors.append(f"{bicepparam}: does not say `using './{bicep.name}'`")
    given = re.findall(r"^param\s+(\w+)\s*=", text, re.M)
    for name in given:
        if name not in declared:
            report.errors.append(f"{bicepparam}: sets `{name}`, which {bicep.name} does not declare")
    for name, has_default in declared.items():
        if not has_default and name not in given:
            report.errors.append(f"{bicepparam}: does not set `{name}`, which has no default")
    report.checked.append(f"{bicepparam.name}: {len(given)} parameters, all declared in {bicep.name}; required ones set")


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).parent)
    parser = Parser(Language(tree_sitter_bicep.language()))
    shapes = {rtype: model_shape(*where) for rtype, where in MODELS.items()}
    report = Report()
    for path in sorted(root.rglob("*.bicep")):
        check_file(path, parser, shapes, report)
    for param_file in sorted(root.rglob("*.bicepparam")):
        target = param_file.with_suffix(".bicep")
        if target.exists():
            check_params(target, param_file, parser, report)
    for line in report.checked:
        print(f"  checked  {line}")
    for line in report.warnings:
        print(f"  warning  {line}")
    for line in report.errors:
        print(f"  ERROR    {line}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
