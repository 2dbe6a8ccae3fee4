"""Split drawing and id-list files: format, round-trip, and errors that name their inputs."""

from __future__ import annotations

import pytest

from imas.data import DataError
from imas.data.splits import make_split, read_list, write_list

POOL = [f"img_{i:03d}" for i in range(50)]


def test_make_split_partitions_pool_in_pool_order() -> None:
    lab, unl = make_split(POOL, 7, seed=0)
    assert len(lab) == 7 and len(unl) == 43
    assert set(lab).isdisjoint(unl) and set(lab) | set(unl) == set(POOL)
    assert lab == [i for i in POOL if i in set(lab)]
    assert unl == [i for i in POOL if i in set(unl)]


def test_make_split_seeded_and_nested() -> None:
    assert make_split(POOL, 10, seed=3) == make_split(POOL, 10, seed=3)
    assert make_split(POOL, 10, seed=3)[0] != make_split(POOL, 10, seed=4)[0]
    small, _ = make_split(POOL, 5, seed=3)
    big, _ = make_split(POOL, 20, seed=3)
    assert set(small) <= set(big)


def test_make_split_full_pool() -> None:
    lab, unl = make_split(POOL, len(POOL), seed=0)
    assert lab == POOL and unl == []


@pytest.mark.parametrize("n", [0, -1, 51])
def test_make_split_bad_count_names_values(n: int) -> None:
    with pytest.raises(ValueError, match=rf"labeled={n}\b.*pool size 50"):
        make_split(POOL, n, seed=0)


def test_make_split_rejects_repeated_pool_id() -> None:
    with pytest.raises(ValueError, match=r"img_001"):
        make_split([*POOL, "img_001"], 3, seed=0)


def test_write_list_format_and_roundtrip(tmp_path) -> None:
    p = tmp_path / "sub" / "labeled.txt"
    write_list(p, ["2007_000733", "2007_000039", "a/b_c"])
    raw = p.read_bytes()
    assert raw == b"2007_000733\n2007_000039\na/b_c"
    assert not raw.endswith(b"\n")
    assert read_list(p) == ["2007_000733", "2007_000039", "a/b_c"]
    assert [x.name for x in p.parent.iterdir()] == ["labeled.txt"]  # no temp file left


def test_write_list_rejects_unroundtrippable_ids(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"a b "):
        write_list(tmp_path / "x.txt", ["ok", "a b "])
    assert not (tmp_path / "x.txt").exists()


def test_read_list_strips_and_skips_blank(tmp_path) -> None:
    p = tmp_path / "l.txt"
    p.write_text("  a \n\n b\r\n\nc\n")
    assert read_list(p) == ["a", "b", "c"]


def test_read_list_missing_names_file(tmp_path) -> None:
    p = tmp_path / "nope.txt"
    with pytest.raises(DataError, match=r"nope\.txt"):
        read_list(p)


def test_read_list_repeat_names_file_and_id(tmp_path) -> None:
    p = tmp_path / "dup.txt"
    p.write_text("a\nb\na")
    with pytest.raises(DataError, match=r"dup\.txt.*'a'.*lines 1 and 3"):
        read_list(p)
    assert issubclass(DataError, ValueError)
