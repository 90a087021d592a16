"""Options shared by several commands, declared once."""
from __future__ import annotations

import click

DATASET_OPTION = click.option(
    "--dataset", default="shakespeare", show_default=True,
    help="shakespeare (built in), text:PATH (a file or folder of your text) or parquet:PATH (text shards).",
)
TOKENIZER_OPTION = click.option(
    "--tokenizer", default=None,
    help="bytes (vocab 256, exact bits per byte) or bpe:N (trained locally). Default: bytes, bpe:8192 for parquet.",
)
DEVICE_OPTION = click.option(
    "--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.",
)
