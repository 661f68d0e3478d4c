"""Every key a Lua script touches is one it received in KEYS, never a name it built: a
Redis Cluster (and ElastiCache Serverless) routes a script by its declared keys and
refuses one that reaches others, and Redis's EVAL documentation asks the same of all."""

from __future__ import annotations

import importlib
import pkgutil
import re

import roleplay
from roleplay.core.lua_script import LuaScript

KEYLESS = {"TIME"}
CALL = re.compile(r"redis\.call\(\s*'(\w+)'\s*(?:,\s*([^,)]+))?")
DECLARED = re.compile(r"KEYS\[[^\]]+\]")


def every_script() -> dict[str, LuaScript]:
    found: dict[str, LuaScript] = {}
    for module_info in pkgutil.walk_packages(roleplay.__path__, "roleplay."):
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if isinstance(value, LuaScript):
                found[f"{module_info.name}.{name}"] = value
    return found


def key_loops(body: str) -> set[str]:
    """Loop variables that run over KEYS entries only (`for _, key in ipairs({KEYS[1], ...})`)."""
    loops = re.findall(r"for\s+_\s*,\s*(\w+)\s+in\s+ipairs\(\{([^}]*)\}\)", body)
    return {name for name, items in loops
            if all(DECLARED.fullmatch(item.strip()) for item in items.split(","))}


def test_the_layer_has_the_scripts_this_test_reads() -> None:
    assert len(every_script()) >= 20


def test_every_script_touches_only_keys_it_declares() -> None:
    undeclared = []
    for name, script in every_script().items():
        loops = key_loops(script.body)
        for command, first in CALL.findall(script.body):
            if command.upper() in KEYLESS:
                continue
            if not (DECLARED.fullmatch(first.strip()) or first.strip() in loops):
                undeclared.append(f"{name}: {command} {first}")
    assert not undeclared, undeclared
