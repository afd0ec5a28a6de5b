"""The command line's own surface: --version and --help."""

from __future__ import annotations

import numpy as np
import pytest

from hashplug.cli import main


def test_version_and_every_option_documented(capsys):
    import argparse

    import hashplug
    from hashplug.cli import build_parser

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert (
        e.value.code == 0 and capsys.readouterr().out.strip() == f"hashplug {hashplug.__version__}"
    )
    parser = build_parser()
    assert "``" not in (parser.description or "")  # no reST markup in --help
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    undocumented = [
        f"{name} {a.option_strings[0] if a.option_strings else a.dest}"
        for name, p in sub.choices.items()
        for a in p._actions
        if not a.help and not isinstance(a, argparse._HelpAction)
    ]
    assert undocumented == []


def test_scoring_cosine_through_ingest_and_search(tmp_path, fmnist, capsys):
    """--scoring cosine on a file:// store gives HashIndex's cosine results.

    And the same ids through LanceDB; a bad combination is one line on stderr and exit 2.
    """
    import json

    import numpy as np

    import hashplug

    x = fmnist["db_x"][:2000] / np.linalg.norm(fmnist["db_x"][:2000], axis=1, keepdims=True)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "q.npy", x[:4])
    hf, store = str(tmp_path / "h.safetensors"), f"file://{tmp_path / 'codes'}"
    common = ["--hasher", hf, "--store", store]
    assert main(["fit", "--embeddings", str(tmp_path / "x.npy"), "--bits", "64", "--out", hf]) == 0
    argv = ["ingest", *common, "--embeddings", str(tmp_path / "x.npy"), "--scoring", "cosine"]
    assert main(argv) == 0
    capsys.readouterr()
    search = ["search", *common, "--queries", str(tmp_path / "q.npy"), "--json"]
    assert main([*search, "--scoring", "cosine"]) == 0
    got = json.loads(capsys.readouterr().out)
    h = hashplug.load_hasher(hf)
    want = hashplug.HashIndex(store, h).search(x[:4], k=10, scoring="cosine")
    assert [r["ids"] for r in got] == want.ids.tolist()
    np.testing.assert_allclose([r["distances"] for r in got], want.distances, rtol=1e-6)
    assert [r["ids"][0] for r in got] == [0, 1, 2, 3]
    assert main(search) == 0  # the default, asymmetric, still reads the same store
    assert len(json.loads(capsys.readouterr().out)) == 4

    lance = f"lancedb://{tmp_path / 'lake'}/docs"  # an engine store keeps the factors too
    on_lance = ["--hasher", hf, "--store", lance, "--scoring", "cosine"]
    assert main(["ingest", *on_lance, "--embeddings", str(tmp_path / "x.npy")]) == 0
    capsys.readouterr()
    assert main(["search", *on_lance, "--queries", str(tmp_path / "q.npy"), "--json"]) == 0
    assert [r["ids"] for r in json.loads(capsys.readouterr().out)] == want.ids.tolist()
    bad = [
        (["search", *common, "--queries", str(tmp_path / "q.npy"), "--scoring", "cosine",
          "--no-rerank"], "cannot go with --no-rerank"),
        (["ingest", *common, "--embeddings", str(tmp_path), "--scoring", "cosine"],
         "not available for a directory of shards"),
    ]  # fmt: skip
    for argv, why in bad:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert why in err and err.count("\n") == 1 and err.startswith("hashplug: error: ")


def test_embedding_files_are_memory_mapped_where_they_can_be(tmp_path):
    """.npy and np.savez members map read-only (ingest reads batch by batch).

    Compressed members are decompressed in chunks to a temporary file and mapped too.
    """
    from hashplug._npfiles import open_array

    x = np.random.default_rng(0).normal(size=(50, 12)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "b.npz", q_x=x[:3], db_x=x)
    np.savez_compressed(tmp_path / "c.npz", db_x=x)
    np.savez_compressed(tmp_path / "f.npz", db_x=np.asfortranarray(x))
    for name in ("a.npy", "b.npz", "c.npz", "f.npz"):
        a = open_array(str(tmp_path / name), "db_x")
        assert isinstance(a, np.memmap) and not a.flags.writeable, name
        np.testing.assert_array_equal(a, x)
    with pytest.raises(ValueError, match=r"has none of the arrays \['train_x'\]"):
        open_array(str(tmp_path / "b.npz"), "train_x")
    raw = (tmp_path / "c.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    damaged = bytearray(raw)
    damaged[len(raw) // 3 : len(raw) // 3 + 64] = bytes(64)
    (tmp_path / "bad.npz").write_bytes(bytes(damaged))
    for name in ("cut.npz", "bad.npz"):
        with pytest.raises(ValueError, match=rf"{name} is not a readable .npz"):
            open_array(str(tmp_path / name), "db_x")
