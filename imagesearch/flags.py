"""Settings dataclasses as command-line flags with environment-variable twins.

Each field `max_batch_size` becomes the flag `--max-batch-size` and the variable `PREFIX_MAX_BATCH_SIZE`:
the flag wins, then the variable, then the dataclass default. The dataclass validates in __post_init__.
"""

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

Config = TypeVar("Config")


def parse_config(
    config_type: type[Config],
    prog: str,
    description: str,
    env_prefix: str,
    helps: Mapping[str, str],
    choices: Mapping[str, Sequence[str]] | None = None,
    argv: Sequence[str] | None = None,
) -> Config:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for field in dataclasses.fields(config_type):  # type: ignore[arg-type]
        default = field.default
        value_type = str if default is None else type(default)
        env = env_prefix + field.name.upper()
        raw = os.environ.get(env)
        try:
            value: Any = default if raw is None else value_type(raw)
        except ValueError as error:
            parser.error(f"environment variable {env}={raw!r}: {error}")
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=value_type,
            default=value,
            choices=(choices or {}).get(field.name),
            help=f"{helps[field.name]} (env {env}, default {default!r})",
        )
    args = parser.parse_args(argv)
    try:
        return config_type(**vars(args))
    except ValueError as error:
        parser.error(str(error))
