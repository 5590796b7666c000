"""How `--help` shows parameters: as a person writes them on a command line.

typer 0.29 prints Python types (`<str>`, `<list[str]>`, `<bool>` next to a flag, `{recipe}` for a
required argument). `humanize(command)` walks a built click command tree once, before it parses
anything, and gives every parameter the conventional look instead:

    --dry-run                      (a flag takes no value: nothing after it)
    --out PATH   --limit INTEGER   --set TEXT…   --device auto|cpu|cuda
    registry merge [OPTIONS] RECIPE

It swaps each typer parameter's class for a subclass that only changes these display methods
(parsing is untouched), so plug-in groups (`bot`, `space`) get the same look.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperOption

_NAMES = {
    "str": "TEXT",
    "int": "INTEGER",
    "int range": "INTEGER",
    "float": "NUMBER",
    "float range": "NUMBER",
    "bool": "BOOLEAN",
    "path": "PATH",
    "file": "FILE",
    "dir": "DIR",
    "datetime": "DATETIME",
}


def human_type(param: Any, ctx: Any) -> str:
    """`TEXT`, `PATH…`, `auto|cpu|cuda`: the value a parameter takes, as a person writes it."""
    label = str(param.display_type(ctx)).strip("<>")
    many = param.nargs != 1 or getattr(param, "multiple", False)
    if label.startswith("list[") and label.endswith("]"):
        label, many = label[5:-1], True
    if "|" not in label:
        label = _NAMES.get(label, label.upper())
    return f"{label}…" if many else label


class _HumanOption(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar
        if self.is_flag or self.count:
            return None
        return human_type(self, ctx)


class _HumanArgument(TyperArgument):
    def _name(self) -> str:
        return (self.metavar or self.name or "").upper()

    def _rich_display_name(self) -> str:
        return self._name()

    def _usage_display_name(self) -> str:
        name = self._name() if self.required else f"[{self._name()}]"
        return f"{name}…" if self.nargs != 1 else name

    def display_type_rich(self, ctx: Any) -> str | None:
        return human_type(self, ctx)


def humanize(command: Any) -> None:
    """Give every parameter of `command` and its subcommands the command-line look (idempotent)."""
    if not getattr(command, "_mergeling_humanized", False):
        # click builds the --help option on demand: give it the same look when it is made.
        make_help_option = command.get_help_option

        def get_help_option(ctx: Any) -> Any:
            option = make_help_option(ctx)
            if type(option) is TyperOption:
                option.__class__ = _HumanOption
            return option

        command.get_help_option = get_help_option
        command._mergeling_humanized = True
    for param in getattr(command, "params", ()):
        if type(param) is TyperOption:
            param.__class__ = _HumanOption
        elif type(param) is TyperArgument:
            param.__class__ = _HumanArgument
            if param.metavar is None and param.name:
                param.metavar = param.name.upper()
    for sub in getattr(command, "commands", {}).values():
        humanize(sub)
