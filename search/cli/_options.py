"""Options shared by several commands, declared once (their help is the search config's, search/config.py)."""
from __future__ import annotations

import click

from search.config import option_help

DATASET_OPTION = click.option("--dataset", default="shakespeare", show_default=True, help=option_help("dataset"))
TOKENIZER_OPTION = click.option(
    "--tokenizer", default=None,
    help="bytes (vocab 256, exact bits per byte) or bpe:N (trained locally). Default: bytes, bpe:8192 for parquet.",
)
DEVICE_OPTION = click.option("--device", default="auto", show_default=True, help=option_help("device"))
