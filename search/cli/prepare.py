"""`search prepare`: fetch and cache a dataset before any evaluation needs it."""
from __future__ import annotations

import click

from search.cli._output import FORMAT_OPTION, Output
from search.cli._options import DATASET_OPTION, TOKENIZER_OPTION


@click.command()
@DATASET_OPTION
@TOKENIZER_OPTION
@FORMAT_OPTION
def prepare(dataset: str, tokenizer: str | None, output_format: str) -> None:
    """Fetch, split and tokenize a dataset into the cache (EVOTRAIN_CACHE)."""
    from trainer.datasets import prepare as prepare_dataset

    out = Output(output_format)
    prepared = prepare_dataset(dataset, tokenizer=tokenizer, log=out.note)
    rows = [("dataset", prepared.name), ("tokenizer", prepared.tokenizer), ("vocab size", str(prepared.vocab_size)),
            ("folder", str(prepared.root))]
    rows += [(f"{split} tokens", f"{len(prepared.tokens(split)):,}") for split in ("train", "val", "test")]
    out.block("prepared", rows, {"name": prepared.name, "root": str(prepared.root), "tokenizer": prepared.tokenizer,
                                 "vocab_size": prepared.vocab_size,
                                 "tokens": {s: len(prepared.tokens(s)) for s in ("train", "val", "test")}})
