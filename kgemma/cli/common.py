"""What the kgemma commands share: turning library errors into one-line messages."""

import functools

import click

# Errors a user can fix from the message alone: shown as one line, exit code 1.
USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, TypeError, ImportError)


def file_fields(text_field, label_field):
    """`read_reviews` keyword arguments for non-default JSONL/CSV column names."""
    if (text_field, label_field) == ("text", "label"):
        return {}
    return {"text_field": text_field, "label_field": label_field}


def user_errors_as_messages(command):
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as e:
            raise click.ClickException(str(e).splitlines()[0] if str(e) else type(e).__name__) from e

    return wrapper
