"""Global options after the command: ``etcron get jobs --server URL --token T``.

Click (under typer) parses options level by level: ``--server`` belongs to
``etcron``, so after ``get jobs`` it would be "no such option". Before parsing,
:func:`hoist` moves ``--server``, ``--token``, ``--cacert`` and ``--config`` (with their
values, ``--opt value`` or ``--opt=value``) found after the command to the
front. It reads the command's own options from the click tree, so a value of
one of them is never mistaken for a global option, and a command that has its
own option of that name (``master --config``, ``worker --config``) keeps it.
Nothing after ``--`` is moved.
"""

from __future__ import annotations

from typing import Any

GLOBALS = ("--server", "--token", "--cacert", "--config")


def _option_names(command: Any) -> tuple[set[str], set[str]]:
    """(every option name of ``command``, the names of those that take a value)."""
    names: set[str] = set()
    valued: set[str] = set()
    for param in getattr(command, "params", []):
        if getattr(param, "param_type_name", "") != "option":
            continue
        opts = [*param.opts, *getattr(param, "secondary_opts", [])]
        names.update(opts)
        if not getattr(param, "is_flag", False) and not getattr(param, "count", False):
            valued.update(param.opts)
    return names, valued


def hoist(root: Any, args: list[str]) -> list[str]:
    """``args`` with the global options that follow the command moved before it."""
    front: list[str] = []
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        front.append(args[i])
        i += 1
        if args[i - 1] in GLOBALS and i < len(args):
            front.append(args[i])
            i += 1
    path: list[str] = []
    command = root
    while i < len(args) and not args[i].startswith("-") and hasattr(command, "commands"):
        sub = command.commands.get(args[i])
        if sub is None:
            return args  # an unknown command: click reports it
        path.append(args[i])
        command = sub
        i += 1
    own, valued = _option_names(command)
    moved: list[str] = []
    rest: list[str] = []
    while i < len(args):
        token = args[i]
        i += 1
        if token == "--":
            rest += args[i - 1 :]
            break
        name = token.split("=", 1)[0]
        if name in GLOBALS and name not in own:
            moved.append(token)
            if "=" not in token and i < len(args):
                moved.append(args[i])
                i += 1
            continue
        rest.append(token)
        if token in valued and i < len(args):
            rest.append(args[i])
            i += 1
    return front + moved + path + rest
