"""FastAPI's OpenAPI models built on first use, not while a function's handler is imported.

`fastapi.openapi.models` declares some fifty pydantic models of the OpenAPI document
(`Schema`, `Operation`, ...) and rebuilds the recursive ones at its end: 70-120 ms of every
cold start on the bench's machines (issue 30), a quarter of it, for models that only
`app.openapi()` uses (the docs, and the `Allow` header of a 405). FastAPI imports the
module for a `TypedDict` (`Example`) and `get_openapi`'s annotations.

While that one module runs, `install()` makes its models pydantic's `defer_build` ones
(inherited from `BaseModel`'s config, as every model inherits it) and lets its own
explicit `model_rebuild()` calls wait too: each model is then built, whole and by
pydantic's own rebuild, the first time anything validates or dumps with it. Nothing else
is deferred: `BaseModel` has its config and `model_rebuild` back when the module is done,
and models declared later (FastAPI's, this project's) are built as before.

Only a process that has not imported FastAPI yet is changed (`cold_start` installs this
first thing in a handler's import); the finder removes itself once used, and
`uninstall()` removes it where FastAPI was never imported (the summarizer).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec, PathFinder
from types import ModuleType
from typing import Any

MODULE = "fastapi.openapi.models"


class _DeferringLoader:
    """The module's own loader, its body run with its models' builds deferred."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        from pydantic import BaseModel, ConfigDict

        config: ConfigDict = BaseModel.__dict__["model_config"]
        rebuild = BaseModel.__dict__["model_rebuild"]

        def rebuild_later(cls: type[BaseModel], /, **options: Any) -> bool | None:
            # the module's own `X.model_rebuild()`: built with the rest on first use;
            # pydantic's rebuild of a deferred model (it passes options) goes through
            return rebuild.__func__(cls, **options) if options else None

        BaseModel.model_config = config.copy()
        BaseModel.model_config["defer_build"] = True
        setattr(BaseModel, "model_rebuild", classmethod(rebuild_later))  # noqa: B010
        try:
            self.loader.exec_module(module)
        finally:
            BaseModel.model_config = config
            setattr(BaseModel, "model_rebuild", rebuild)  # noqa: B010


class _Finder:
    """A `sys.meta_path` finder for the one module: its real spec, with the loader wrapped."""

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if name != MODULE:
            return None
        uninstall()
        spec = PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _DeferringLoader(spec.loader)  # type: ignore[assignment]
        return spec


_finder = _Finder()


def install() -> None:
    """Defers the OpenAPI models of a FastAPI imported from now on; nothing if one was."""
    if MODULE not in sys.modules and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


def deferred() -> bool:
    """Whether FastAPI's `Schema` model waits for its first use (unbuilt) now."""
    module = sys.modules.get(MODULE)
    return module is not None and not module.Schema.__pydantic_complete__
