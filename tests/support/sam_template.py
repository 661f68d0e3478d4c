"""Reads template.yaml's HttpApi routes, tolerating CloudFormation's short tags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)  # type: ignore[arg-type]


_CfnLoader.add_multi_constructor("!", _tag)


def load_template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


def http_routes_by_function() -> dict[str, set[tuple[str, str]]]:
    """{function folder name: {(METHOD, path)}} from each function's HttpApi events."""
    routes: dict[str, set[tuple[str, str]]] = {}
    for resource in load_template()["Resources"].values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        name = props["CodeUri"].rstrip("/").split("/")[-1]
        for event in props.get("Events", {}).values():
            if event["Type"] == "HttpApi":
                routes.setdefault(name, set()).add(
                    (event["Properties"]["Method"].upper(), event["Properties"]["Path"]))
    return routes
