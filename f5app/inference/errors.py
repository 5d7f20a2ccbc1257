"""The one error type for bad inference input: the CLI prints its message as one line and exits 2."""

from f5app.errors import UserError


class InferenceInputError(UserError, ValueError):
    """Input that cannot be synthesised as given (text, reference, output path); the message says what to fix."""
