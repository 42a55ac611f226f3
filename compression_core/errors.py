"""The one error type users see: a one-line message naming what was wrong and how to fix it."""


class CompressionError(ValueError):
    """Bad input (config, recipe, model name, file). The CLI prints it as one line and exits 2;
    the dashboard shows it with ``st.error``."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line
