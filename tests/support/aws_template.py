"""deploy/aws/shop.yaml as CloudFormation would see it, without AWS.

``load_template`` reads the YAML with its short-form tags (``!Ref``, ``!Sub``, ``!If``, ...)
turned into their long forms. ``Stack.of(template, **parameters)`` then plays CloudFormation's
part for one set of parameters: it evaluates the conditions, drops the resources whose
condition is false, and resolves the intrinsic functions. What only exists once deployed
(an endpoint's address, a group's id) resolves to a placeholder naming it, ``<Database.Endpoint
.Address>`` or ``<AppSecurityGroup.GroupId>``, so a test can still see what refers to what.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "aws" / "shop.yaml"

Template = dict[str, Any]

_FUNCTIONS = (
    *("And", "Base64", "Cidr", "Equals", "FindInMap", "GetAZs", "GetAtt", "If", "ImportValue"),
    *("Join", "Length", "Not", "Or", "Select", "Split", "Sub", "ToJsonString", "Transform"),
)


class CloudFormationLoader(yaml.SafeLoader):
    """A safe loader that knows CloudFormation's short-form tags."""


def _short_form(name: str):
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if name in {"Ref", "Condition"}:
            return {name: value}
        if name == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {f"Fn::{name}": value}

    return construct


for _name in (*_FUNCTIONS, "Ref", "Condition"):
    CloudFormationLoader.add_constructor(f"!{_name}", _short_form(_name))


def load_template(path: Path = TEMPLATE) -> Template:
    with path.open() as stream:
        document = yaml.load(stream, Loader=CloudFormationLoader)  # noqa: S506 - a SafeLoader
    assert isinstance(document, dict), f"{path.name} is not a YAML mapping"
    return document


def yaml_aliases(path: Path = TEMPLATE) -> list[str]:
    """Anchors and aliases in the file: CloudFormation refuses them ("YAML aliases are not
    allowed"), though every YAML parser, cfn-lint's included, accepts them."""
    found = []
    for event in yaml.parse(path.read_text(), Loader=CloudFormationLoader):
        if isinstance(event, yaml.AliasEvent):
            found.append(f"alias *{event.anchor} at line {event.start_mark.line + 1}")
        elif getattr(event, "anchor", None):
            found.append(f"anchor &{event.anchor} at line {event.start_mark.line + 1}")
    return found


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()
_PLACEHOLDER = re.compile(r"^<([A-Za-z0-9]+)(?:\.[A-Za-z0-9.]+)?>$")


def logical_id(value: Any) -> str | None:
    """The resource a resolved reference names: ``<AppSecurityGroup.GroupId>`` ->
    ``AppSecurityGroup``; None for anything else (a literal, a CIDR)."""
    match = _PLACEHOLDER.match(value) if isinstance(value, str) else None
    return match.group(1) if match else None


@dataclass
class Stack:
    """The template resolved for one set of parameter values."""

    template: Template
    parameters: dict[str, str]
    conditions: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def of(cls, template: Template, **overrides: Any) -> Stack:
        specs = template.get("Parameters", {})
        unknown = set(overrides) - set(specs)
        assert not unknown, f"no such parameters: {sorted(unknown)}"
        parameters = {
            name: str(spec["Default"]) if "Default" in spec else f"<{name} given>"
            for name, spec in specs.items()
        }
        parameters.update({name: str(value) for name, value in overrides.items()})
        for name, value in parameters.items():
            allowed = specs[name].get("AllowedValues")
            if allowed is not None:
                assert value in [str(v) for v in allowed], f"{name}={value} is not allowed"
        stack = cls(template, parameters)
        for name in template.get("Conditions", {}):
            stack.condition(name)
        return stack

    # -- conditions and resources -------------------------------------------------------------

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self._evaluate(self.template["Conditions"][name]))
        return self.conditions[name]

    def exists(self, logical: str) -> bool:
        resource = self.template["Resources"].get(logical)
        if resource is None:
            return False
        return "Condition" not in resource or self.condition(resource["Condition"])

    def resources(self, kind: str | None = None) -> dict[str, dict[str, Any]]:
        """Logical id -> resolved properties, for the resources this stack creates."""
        return {
            name: self.resolve(resource.get("Properties", {}))
            for name, resource in self.template["Resources"].items()
            if (kind is None or resource["Type"] == kind) and self.exists(name)
        }

    def properties(self, logical: str) -> dict[str, Any]:
        assert self.exists(logical), f"{logical} is not created with {self.parameters}"
        return self.resolve(self.template["Resources"][logical].get("Properties", {}))

    def containers(self, task_definition: str) -> dict[str, dict[str, Any]]:
        return {c["Name"]: c for c in self.properties(task_definition)["ContainerDefinitions"]}

    def environment(self, task_definition: str, container: str) -> dict[str, str]:
        spec = self.containers(task_definition)[container]
        return {item["Name"]: item["Value"] for item in spec.get("Environment", [])}

    # -- intrinsic functions ------------------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            resolved = (self.resolve(item) for item in value)
            return [item for item in resolved if item is not NO_VALUE]
        if isinstance(value, dict):
            if len(value) == 1:
                (key, argument) = next(iter(value.items()))
                if key == "Ref" or key.startswith("Fn::"):
                    return self._evaluate(value)
                if key == "Condition" and isinstance(argument, str):
                    # A condition named inside Fn::And / Fn::Or / Fn::Not.
                    return self.condition(argument)
            resolved = {key: self.resolve(item) for key, item in value.items()}
            return {key: item for key, item in resolved.items() if item is not NO_VALUE}
        return value

    def _evaluate(self, expression: dict[str, Any]) -> Any:
        ((key, argument),) = expression.items()
        if key == "Condition":
            return self.condition(argument)
        if key == "Ref":
            if argument == "AWS::NoValue":
                return NO_VALUE
            return self.parameters.get(argument, f"<{argument}>")
        if key == "Fn::If":
            name, when_true, when_false = argument
            return self.resolve(when_true if self.condition(name) else when_false)
        if key == "Fn::Equals":
            left, right = (str(self.resolve(item)) for item in argument)
            return left == right
        if key == "Fn::Not":
            return not self._truth(argument[0])
        if key == "Fn::And":
            return all(self._truth(item) for item in argument)
        if key == "Fn::Or":
            return any(self._truth(item) for item in argument)
        if key == "Fn::GetAtt":
            return f"<{'.'.join(argument)}>"
        if key == "Fn::GetAZs":
            return [f"az{index}" for index in range(6)]
        if key == "Fn::Select":
            index, items = self.resolve(argument)
            return items[int(index)]
        if key == "Fn::Join":
            separator, items = self.resolve(argument)
            return separator.join(str(item) for item in items)
        if key == "Fn::FindInMap":
            mapping, first, second = self.resolve(argument)
            return self.template["Mappings"][mapping][first][second]
        if key == "Fn::Cidr":
            _, count, bits = self.resolve(argument)
            return [f"cidr{index}/{32 - int(bits)}" for index in range(int(count))]
        if key == "Fn::Sub":
            return self._sub(argument)
        raise AssertionError(f"the test's resolver does not know {key}")

    def _truth(self, item: Any) -> bool:
        return bool(self.resolve(item))

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        values = {name: self.resolve(item) for name, item in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in values:
                return str(values[name])
            return str(self.parameters.get(name, f"<{name}>"))

        return re.sub(r"\$\{([^}]+)\}", replace, text)


# -- AWS's own figures, written here once, independently of the template ---------------------

# Memory of each RDS instance class the template allows, GiB (AWS's instance class tables).
RDS_MEMORY_GIB = {
    "db.t4g.medium": 4, "db.t4g.large": 8,
    "db.m7g.large": 8, "db.m7g.xlarge": 16, "db.m7g.2xlarge": 32, "db.m7g.4xlarge": 64,
    "db.r7g.large": 16, "db.r7g.xlarge": 32, "db.r7g.2xlarge": 64, "db.r7g.4xlarge": 128,
}  # fmt: skip

# DBInstanceClassMemory, the memory RDS leaves PostgreSQL, is not published per class: a tenth
# of the class's memory is allowed for the operating system and RDS's agents.
INSTANCE_CLASS_MEMORY_SHARE = 0.9


def rds_max_connections(instance_class: str) -> int:
    """RDS for PostgreSQL's default: LEAST({DBInstanceClassMemory/9531392}, 5000)."""
    memory = INSTANCE_CLASS_MEMORY_SHARE * RDS_MEMORY_GIB[instance_class] * 2**30
    return min(int(memory // 9531392), 5000)
