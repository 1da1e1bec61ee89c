"""The errors a user can cause. The CLI turns each into one line and exit code 2."""


class TfdebiasError(Exception):
    """Base class: bad input the user can fix. The message says what and where."""

    exit_code = 2


class UsageError(TfdebiasError):
    """A bad argument: unknown name, out-of-range value, conflicting options."""


class SchemaError(TfdebiasError):
    """A schema that is malformed, or data that does not match a model's schema."""


class DataError(TfdebiasError):
    """A missing or malformed input file. Name the file, line and column."""

    def __init__(self, message: str, *, path=None, line=None, column=None, expected=None):
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column!r}")
        text = (": ".join([", ".join(where), message]) if where else message)
        if expected:
            text += f" (expected {expected})"
        super().__init__(text)
        self.path, self.line, self.column, self.expected = path, line, column, expected
