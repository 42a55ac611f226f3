"""The one error type users see: a one-line message naming what was wrong and how to fix it; and the command
line's argument parser, which raises it."""

import argparse


class CompressionError(ValueError):
    """Bad input (config, recipe, model name, file). The CLI prints it as one line and exits 2;
    the dashboard shows it with ``st.error``."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line


class OneLineParser(argparse.ArgumentParser):
    """argparse that raises CompressionError instead of printing usage, so every bad argument is one line and exit 2
    (the CLI and its search command parse with it)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CompressionError(f"{self.prog}: {message}")
