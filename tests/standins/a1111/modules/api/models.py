"""Stand-in for the two pydantic models of A1111 v1.10.1 ``modules/api/models.py`` that
``ScriptRunner.create_script_ui_inner`` builds for every script: ``ScriptArg`` and
``ScriptInfo`` (same fields, same pydantic-v1 semantics: assignment is not validated,
``choices`` are coerced to ``list[str]`` at construction).  Written from the API.
"""
from typing import Any, Optional

from pydantic import BaseModel, Field


class ScriptArg(BaseModel):
    label: str = Field(default=None, title="Label")
    value: Optional[Any] = Field(default=None, title="Value")
    minimum: Optional[Any] = Field(default=None, title="Minimum")
    maximum: Optional[Any] = Field(default=None, title="Maximum")
    step: Optional[Any] = Field(default=None, title="Step")
    choices: Optional[list[str]] = Field(default=None, title="Choices")


class ScriptInfo(BaseModel):
    name: str = Field(default=None, title="Name")
    is_alwayson: bool = Field(default=None, title="IsAlwayson")
    is_img2img: bool = Field(default=None, title="IsImg2img")
    args: list[ScriptArg] = Field(title="Arguments")
