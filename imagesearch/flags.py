"""Settings dataclasses as command-line flags with environment-variable twins.

Each field `max_batch_size` becomes the flag `--max-batch-size` and the variable `PREFIX_MAX_BATCH_SIZE`:
the flag wins, then the variable, then the default.
The field's metadata also holds its `help` and any `choices`; the dataclass validates in __post_init__.
"""

import argparse
import dataclasses
import os
from collections.abc import Sequence
from typing import Any, TypeVar

from .defaults import LONGEST_SECONDS
from .ports import is_port

Config = TypeVar("Config")


def setting(default: Any, help: str, choices: Sequence[str] | None = None) -> Any:
    """A settings field with what its flag needs to know."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def parse_config(
    config_type: type[Config], prog: str, description: str, env_prefix: str, argv: Sequence[str] | None = None
) -> Config:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for field in dataclasses.fields(config_type):  # type: ignore[arg-type]
        default = field.default
        value_type = type(default)
        env, flag = env_prefix + field.name.upper(), "--" + field.name.replace("_", "-")
        raw = os.environ.get(env)
        try:
            value: Any = default if raw is None else value_type(raw)
        except ValueError:  # settings are text, or numbers
            kind = "a whole number" if value_type is int else "a number"
            parser.error(f"environment variable {env}={raw!r} is not {kind}, as {flag} takes")
        parser.add_argument(
            flag,
            dest=field.name,
            type=value_type,
            default=value,
            choices=field.metadata["choices"],
            help=f"{field.metadata['help']} (env {env}, default {default!r})",
        )
    args = parser.parse_args(argv)
    try:
        return config_type(**vars(args))
    except ValueError as error:
        parser.error(str(error))


def require_at_least(config: object, names: Sequence[str], least: int = 1) -> None:
    """ValueError naming the first of `names` whose value is below `least`."""
    for name in names:
        if getattr(config, name) < least:
            raise ValueError(f"{name} must be at least {least}, not {getattr(config, name)}")


def require_at_most(config: object, names: Sequence[str], most: int) -> None:
    """ValueError naming the first of `names` whose value is above `most`."""
    for name in names:
        if getattr(config, name) > most:
            raise ValueError(f"{name} must be at most {most}, not {getattr(config, name)}")


def require_seconds(config: object, names: Sequence[str], zero_allowed: bool = False) -> None:
    """ValueError naming the first of `names` that is not a number of seconds above 0 (or 0 too), at most
    LONGEST_SECONDS."""
    for name in names:
        seconds = getattr(config, name)
        if not (seconds <= LONGEST_SECONDS and (seconds > 0 or (zero_allowed and seconds == 0))):
            least = "0 or more" if zero_allowed else "above 0"
            raise ValueError(
                f"{name} must be a number of seconds {least}, at most {LONGEST_SECONDS:g}, not {seconds}"
            )


def require_ports(config: object, names: Sequence[str], none: int | None = None) -> None:
    """ValueError naming the first of `names` that is not a port (0: any free one), nor `none` if given."""
    for name in names:
        port = getattr(config, name)
        if not is_port(port, none):
            allowed = "0 to 65535" if none is None else f"0 to 65535, or {none} for none"
            raise ValueError(f"{name} must be {allowed}, not {port}")
