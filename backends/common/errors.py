"""Errors that name the field (or file, row, column) the user has to fix.

The UI shows them as gr.Warning/gr.Error, the CLIs print them and exit 2.
"""
from __future__ import annotations


class FieldError(ValueError):
    """A bad value in one named field: `FieldError("learning_rate", "must be > 0, got -1")`."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")
