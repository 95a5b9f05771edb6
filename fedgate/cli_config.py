"""The run settings as command-line flags, derived from their declaration
(`fedgate.core.config.RunConfig`): one flag per setting for `serve` and `sim`, read back into
a config, and a config written out as the flags `fedgate serve` takes (for `sim`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from fedgate.core.config import RunConfig, Setting, settings
from fedgate.errors import ConfigError


def add_config_options(
    parser: argparse._ActionsContainer,
    declaration: type[Any] = RunConfig,
    *,
    defaults: Mapping[str, Any] | None = None,
    helps: Mapping[str, str] | None = None,
) -> None:
    """A flag for every setting of ``declaration``, its value stored under the setting's
    name. ``defaults`` and ``helps`` replace a setting's own (sim's differ for some)."""
    defaults, helps = defaults or {}, helps or {}
    for setting in settings(declaration):
        default = defaults.get(setting.name, setting.default)
        described = helps.get(setting.name, setting.option.help)  # the metavar lists choices
        common: dict[str, Any] = {"dest": setting.name, "default": default}
        if setting.kind is bool:
            action = argparse.BooleanOptionalAction
            parser.add_argument(setting.flag, action=action, help=described, **common)
            continue
        parser.add_argument(
            setting.flag,
            type=flag_type(setting),
            metavar=_metavar(setting),
            help=f"{described} (default: {default})",
            **common,
        )


def config_arguments(config: object, declaration: type[Any] = RunConfig) -> list[str]:
    """The flags that give ``config`` (a ``declaration``) back: `fedgate serve`'s arguments."""
    arguments: list[str] = []
    for setting in settings(declaration):
        value = getattr(config, setting.name)
        if setting.kind is bool:
            arguments.append(setting.flag if value else "--no-" + setting.flag[2:])
        else:
            # repr: a float's shortest form that parses back to the same float
            arguments += [setting.flag, value if setting.kind is str else repr(value)]
    return arguments


def flag_type(setting: Setting) -> Callable[[str], Any]:
    """argparse type: text as the setting's kind, checked as the setting checks it (a
    strategy's name, say); bounds wait for the config, since sim gives 0 a meaning."""

    def parse(text: str) -> Any:
        try:
            value = setting.kind(text)
            if setting.option.check is not None:
                setting.option.check(value)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(error.message) from None
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {setting.kind.__name__}: {text!r}") from None
        return value

    parse.__name__ = setting.kind.__name__  # argparse names the type in its messages
    return parse


def _metavar(setting: Setting) -> str:
    if setting.option.choices is None:
        return setting.flag[2:].upper().replace("-", "_")  # as argparse names --deadline
    return "{" + ",".join(setting.option.choices()) + "}"
