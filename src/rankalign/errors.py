"""User-facing errors: one line, naming where the problem is; the CLI exits 2 on them."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or configuration (exit code 2, no traceback)."""

    def __init__(self, message: str, *, file=None, line=None, row=None, field=None):
        where = []
        if file is not None:
            where.append(str(file))
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        self.location = ", ".join(where)
        text = f"{self.location}: {message}" if where else str(message)
        super().__init__(one_line(text))


def one_line(text: str) -> str:
    """`text` on one line, whatever it quoted (a file name or key with a newline, CR, U+2028)."""
    return " ".join(str(text).splitlines())
