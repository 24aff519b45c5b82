"""Every kind of `--datasets` entry read into one metadata table, without decoding audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import append_cv_rows, encode, link_cv_release, speaker_id, tone
from parla.dialects import DIALECTS
from parla.errors import SourceError, UsageError
from parla.store.sources import (
    METADATA_COLUMNS,
    LoadedSource,
    SourceSpec,
    clip_reader,
    clips_outside,
    detect_kind,
    load_source,
    parse_source_spec,
    read_tsv_lines,
)

SPEAKERS = {"ana": ("Central", 3), "pau": ("Valencià", 2), "joan": ("Balear|Mallorquí", 3)}


def load(location: str | Path, cache_dir: Path | None = None) -> LoadedSource:
    return load_source(parse_source_spec(str(location)), str(cache_dir) if cache_dir else None)


def reasons(source: LoadedSource) -> dict[str, str]:
    return {reject.source_path: reject.reason for reject in source.rejects}


# --- raw Common Voice release ----------------------------------------------------------------

def test_cv_release_with_clip_durations(cv_release) -> None:
    folder = cv_release(SPEAKERS)
    source = load(folder)
    meta = source.metadata
    assert source.kind == "cv_release" and source.clips_dir == folder / "clips"
    assert set(meta.columns) == set(METADATA_COLUMNS) and len(meta) == 8
    assert meta["dialect"].tolist() == ["central"] * 3 + ["valencia"] * 2 + ["balear"] * 3
    assert meta["client_id"].tolist()[:3] == [speaker_id("ana")] * 3
    assert meta["up_votes"].tolist() == [2] * 8 and meta["row"].tolist() == list(range(8))
    listed = dict(line.split("\t") for line in
                  (folder / "clip_durations.tsv").read_text().splitlines()[1:])
    assert meta["duration"].tolist() == [int(listed[p]) / 1000 for p in meta["path"]]
    assert source.rejects == [] and source.rows_without_dialect == 0


def test_cv_release_without_clip_durations_probes_the_headers(cv_release) -> None:
    listed = load(cv_release(SPEAKERS, name="listed")).metadata
    probed = load(cv_release(SPEAKERS, name="probed", durations_tsv=False)).metadata
    assert probed["path"].tolist() == listed["path"].tolist()
    np.testing.assert_allclose(probed["duration"], listed["duration"], atol=0.03)


@pytest.mark.parametrize("durations_tsv", [True, False])
def test_unreadable_clips_are_rejected_before_selection(cv_release, durations_tsv: bool) -> None:
    folder = cv_release({"ana": ("Central", 3)}, durations_tsv=durations_tsv)
    (folder / "clips" / "empty.mp3").write_bytes(b"")
    (folder / "clips" / "a_folder.mp3").mkdir()
    append_cv_rows(folder, [
        {"client_id": speaker_id("ana"), "path": name, "sentence": "Hola.", "accents": "Central"}
        for name in ("empty.mp3", "gone.mp3", "a_folder.mp3")],
        {"empty.mp3": 0, "gone.mp3": 1500, "a_folder.mp3": 0})
    source = load(folder)
    expected = {"empty.mp3": "empty_file", "a_folder.mp3": "unreadable_file"}
    if not durations_tsv:  # listed clips are not opened until they are decoded
        expected["gone.mp3"] = "missing_file"
    assert reasons(source) == expected
    durations = dict(zip(source.metadata["path"], source.metadata["duration"], strict=True))
    assert all(np.isnan(durations[path]) for path in expected)


def test_sentences_are_read_unquoted(cv_release) -> None:
    folder = cv_release({"ana": ("Central", 3)})
    tricky = ['"Bon dia", va dir la Maria.', "Diu \"hola\" i se'n va.", "«Vols venir?» va dir.",
              "'Sí', va respondre."]
    append_cv_rows(folder, [{"client_id": speaker_id("ana"), "path": f"q{i}.mp3", "sentence": s,
                             "accents": "Central"} for i, s in enumerate(tricky)])
    meta = load(folder).metadata
    assert meta["sentence"].tolist()[-4:] == tricky
    assert len(meta) == 7  # a quote did not swallow the lines after it


def test_rows_without_sentence_or_speaker_are_rejects_but_still_counted(cv_release) -> None:
    folder = cv_release({"ana": ("Central", 3)})
    for name in ("no_text.mp3", "no_speaker.mp3", "neither.mp3"):
        (folder / "clips" / name).write_bytes(encode(tone(1.5)))
    append_cv_rows(folder, [
        {"client_id": speaker_id("ana"), "path": "no_text.mp3", "accents": "Central"},
        {"path": "no_speaker.mp3", "sentence": "Hola.", "accents": "Central"},
        {"path": "neither.mp3", "accents": "Central"}])
    source = load(folder)
    assert [(r.source_path, r.dialect, r.reason) for r in source.rejects] == [
        ("no_text.mp3", "central", "missing_sentence"),
        ("neither.mp3", "central", "missing_sentence"),
        ("no_speaker.mp3", "central", "missing_client_id")]
    assert len(source.metadata) == 6  # selection drops them, and counts them as it does


def test_accents_pick_each_rows_dialect_and_unknown_ones_are_left_out(cv_release) -> None:
    folder = cv_release({"ana": ("Central", 2), "iu": ("Andalusian", 2), "pep": ("", 1),
                         "rita": ("Tortosí", 2)})
    source = load(folder)
    assert source.metadata["dialect"].tolist() == ["central"] * 2 + ["tortosi"] * 2
    assert source.rows_without_dialect == 3
    assert source.metadata["row"].tolist() == [0, 1, 5, 6]  # still point at the file's rows


def test_name_equals_source_sets_the_dialect(cv_release) -> None:
    folder = cv_release(SPEAKERS)
    source = load(f"nord_occidental={folder}")
    assert set(source.metadata["dialect"]) == {"nord_occidental"}
    assert source.spec.location == str(folder)


def test_the_folder_name_can_name_the_dialect(cv_release) -> None:
    source = load(cv_release(SPEAKERS, name="cv_23_ca_tortosi"))
    assert set(source.metadata["dialect"]) == {"tortosi"} and len(source.metadata) == 8


def test_a_source_whose_dialect_cannot_be_told(cv_release) -> None:
    folder = cv_release({"iu": ("Andalusian", 2)})
    with pytest.raises(SourceError, match="DIALECT=") as raised:
        load(folder)
    assert all(dialect_id in str(raised.value) for dialect_id in DIALECTS)


def test_a_release_missing_columns(tmp_path) -> None:
    (tmp_path / "validated.tsv").write_text("client_id\tsentence\nabc\tHola.\n")
    with pytest.raises(SourceError, match="missing column.*path"):
        load(tmp_path)


def test_bad_tsv_lines_are_rejects_with_their_line_number(tmp_path) -> None:
    (tmp_path / "t.tsv").write_bytes(
        b"\xef\xbb\xbfa\tpath\tc\n"  # a byte-order mark is not part of the first column's name
        b"1\t2\t3\n"
        b"1\t2\t3\t4\n"
        b"1\t\xff2\t3\n"
        b"\n"
        b"1\t2\n"
        b'"4\t5\t6\r\n')
    table, bad = read_tsv_lines(tmp_path / "t.tsv")
    assert list(table.columns) == ["a", "path", "c"]
    assert table.to_dict("records") == [{"a": "1", "path": "2", "c": "3"},
                                        {"a": '"4', "path": "5", "c": "6"}]
    assert [(line.number, line.reason) for line in bad] == [
        (3, "extra_fields"), (4, "bad_encoding"), (6, "missing_fields")]
    assert bad[0].detail == "line 3 has 4 tab-separated fields, the header 3 (path field: 2)"
    assert bad[1].detail == "line 4: byte 0xff at offset 2 is not UTF-8"


def test_a_release_with_bad_lines_keeps_its_good_rows(cv_release) -> None:
    folder = cv_release({"ana": ("Central", 3)}, name="cv_23_ca_central")
    with open(folder / "validated.tsv", "ab") as handle:
        handle.write(b"x\ty\n" + b"\t".join([b"z"] * 12) + b"\xfe\n")
    source = load(folder)
    assert len(source.metadata) == 3
    assert [(r.source_path, r.dialect, r.reason) for r in source.rejects] == [
        ("validated.tsv:5", "central", "missing_fields"),
        ("validated.tsv:6", "central", "bad_encoding")]


def test_clip_paths_leaving_clips_are_rejects_and_never_opened(cv_release, tmp_path) -> None:
    folder = cv_release({"ana": ("Central", 3)})
    (tmp_path / "secret.mp3").write_bytes(encode(tone(1.5)))
    clips = folder / "clips"
    (clips / "sub").mkdir()
    (clips / "sub" / "ok.mp3").write_bytes(encode(tone(1.5)))
    paths = ["../../secret.mp3", "/etc/passwd", "../../../../etc/passwd", "sub/../../secret.mp3",
             "sub/..", "", "./", "..\\..\\secret.mp3", "sub/ok.mp3"]
    append_cv_rows(folder, [{"client_id": speaker_id("ana"), "path": p, "sentence": "Hola.",
                             "accents": "Central"} for p in paths], {p: 1500 for p in paths})
    outside = clips_outside(paths)
    assert set(outside) == set(paths[:-1])
    assert outside["/etc/passwd"] == "is absolute" and outside["./"].startswith("names the")
    assert outside["../../secret.mp3"] == outside["..\\..\\secret.mp3"] == "goes up a folder ('..')"
    source = load(folder)
    assert reasons(source) == dict.fromkeys(paths[:-1], "path_outside_clips")
    assert {r.dialect for r in source.rejects} == {"central"}
    assert source.rejects[1].detail == f"the path is absolute; only files in {clips} are read"
    kept = source.metadata["path"].tolist()
    assert "sub/ok.mp3" in kept and not set(paths[:-1]) & set(kept)


def test_a_symlink_in_clips_is_the_releases_clip_wherever_it_points(cv_release, tmp_path) -> None:
    """Containment is by name: a file in clips/ under its own name is read, symlink or not."""
    original = cv_release({"ana": ("Central", 3)}, name="original")
    linked = link_cv_release(original, tmp_path / "elsewhere" / "cv-release")
    (linked / "clips" / "sub").mkdir()
    (linked / "clips" / "sub" / "deep.mp3").symlink_to(original / "clips" / next(
        (original / "clips").iterdir()).name)
    (linked / "clips" / "dangling.mp3").symlink_to(tmp_path / "gone.mp3")
    extra = [{"client_id": speaker_id("ana"), "path": path, "sentence": "Hola.",
              "accents": "Central"} for path in ("sub/deep.mp3", "dangling.mp3")]
    append_cv_rows(linked, extra)  # not in clip_durations.tsv: each file is probed
    copied = load(original).metadata.drop(columns="source")
    source = load(linked)
    meta = source.metadata.drop(columns="source")
    assert meta[:3].equals(copied) and meta.at[3, "path"] == "sub/deep.mp3"
    assert meta.at[3, "duration"] > 1
    # it still has to decode, as every clip does: a link to nothing is a missing file
    assert reasons(source) == {"dangling.mp3": "missing_file"}
    reader = clip_reader(source)
    assert reader.read(0, meta.at[0, "path"]) == (original / "clips" / meta.at[0, "path"]
                                                  ).read_bytes()


def test_a_release_whose_every_row_is_rejected_says_why(cv_release) -> None:
    folder = cv_release({"ana": ("Central", 2)})
    lines = (folder / "validated.tsv").read_text().splitlines()
    (folder / "validated.tsv").write_text("\n".join(
        [lines[0]] + [line.replace("common_voice", "../../common_voice") for line in lines[1:]]
        + ["too\tfew"]) + "\n")
    with pytest.raises(UsageError) as raised:
        load(folder)
    assert isinstance(raised.value, SourceError)
    assert str(raised.value) == (f"{folder}: all 3 rows were rejected: 2 path_outside_clips, "
                                 "1 missing_fields")
    assert "DIALECT=" not in str(raised.value)


# --- parsing and recognising entries ---------------------------------------------------------

def test_parse_source_spec() -> None:
    spec = parse_source_spec("Valencià=/data/cv")
    assert spec.location == "/data/cv" and spec.dialect is DIALECTS["valencia"]
    hub = parse_source_spec("xaviviro/cv_23_ca_balear")
    assert hub.location == "xaviviro/cv_23_ca_balear" and hub.dialect is None
    assert hub.name == "cv_23_ca_balear"


def test_unknown_dialect_in_name_equals_source() -> None:
    with pytest.raises(UsageError, match="unknown dialect 'gascon'.*central"):
        parse_source_spec("gascon=/data/cv")


def test_a_folder_whose_name_holds_an_equals_sign(tmp_path) -> None:
    folder = tmp_path / "central=copy"
    folder.mkdir()
    spec = parse_source_spec(str(folder))
    assert spec.location == str(folder) and spec.dialect is None


def test_detect_kind(tmp_path, cv_release) -> None:
    assert detect_kind(str(cv_release(SPEAKERS))) == "cv_release"
    assert detect_kind(str(tmp_path)) == "folder"
    assert detect_kind("xaviviro/cv_23_ca_central") == "hub"
    (tmp_path / "file.tsv").write_text("x")
    with pytest.raises(SourceError, match="is a file"):
        detect_kind(str(tmp_path / "file.tsv"))
    with pytest.raises(SourceError, match="no such folder"):
        detect_kind(str(tmp_path / "missing" / "cv"))


def test_a_relative_path_that_is_not_there_is_not_a_hub_id(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(SourceError, match=r"^data/my_central: no such folder \(data/ has no "
                                          r"my_central\)$"):
        detect_kind("data/my_central")
    assert detect_kind("xaviviro/cv_23_ca_central") == "hub"  # no folder xaviviro/ here


def test_a_hub_id_offline_is_a_clear_source_error(tmp_path, monkeypatch) -> None:
    import datasets
    from huggingface_hub import constants

    # both libraries read HF_HUB_OFFLINE once, at import, which may precede the hermetic env
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(SourceError, match="cannot load.*Hub cannot be reached") as raised:
        load("nobody-here/cv_23_ca_central", tmp_path / "cache")
    assert "\n" not in str(raised.value)


# --- sources that `datasets` reads -----------------------------------------------------------

def audio_dataset(rows: list[dict]):
    """A datasets.Dataset whose `audio` holds MP3 bytes, as the Hub dialect datasets do."""
    import datasets

    columns = {key: [row.get(key) for row in rows] for key in rows[0]}
    dataset = datasets.Dataset.from_dict(columns)
    return dataset.cast_column("audio", datasets.Audio(decode=False))


def clip_rows(count: int, seconds: float = 1.5, **fields) -> list[dict]:
    return [{"audio": {"bytes": encode(tone(seconds + 0.1 * i)), "path": f"cv_{i:03d}.mp3"},
             "client_id": f"spk{i % 2}", "sentence": f"Frase {i}.", "up_votes": 2,
             "down_votes": 0, "age": "twenties", "gender": "female_feminine",
             "accents": "Central"} | fields for i in range(count)]


def write_hub_folder(folder: Path, rows: list[dict]) -> Path:
    (folder / "data").mkdir(parents=True)
    audio_dataset(rows).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


def test_hub_layout_folder(tmp_path) -> None:
    rows = clip_rows(4)
    folder = write_hub_folder(tmp_path / "cv_23_ca_balear", rows)
    source = load(folder, tmp_path / "cache")
    meta = source.metadata
    assert source.kind == "folder" and set(meta.columns) == set(METADATA_COLUMNS)
    assert set(meta["dialect"]) == {"balear"}  # from the folder name, over the accents
    assert meta["path"].tolist() == [f"cv_{i:03d}.mp3" for i in range(4)]
    assert meta["sentence"].tolist() == [f"Frase {i}." for i in range(4)]
    np.testing.assert_allclose(meta["duration"], [1.5, 1.6, 1.7, 1.8], atol=0.03)
    assert source.read_bytes([2, 0]) == [rows[2]["audio"]["bytes"], rows[0]["audio"]["bytes"]]


def test_missing_values_are_empty_not_the_string_none(tmp_path) -> None:
    rows = clip_rows(3)
    rows[1] |= {"sentence": None, "age": None, "gender": None, "up_votes": None}
    rows[2] |= {"client_id": None}
    source = load(write_hub_folder(tmp_path / "central", rows), tmp_path / "cache")
    meta = source.metadata
    assert meta.loc[1, ["sentence", "age", "gender"]].tolist() == ["", "", ""]
    assert meta.loc[1, "up_votes"] == 0 and meta.loc[2, "client_id"] == ""
    assert "None" not in meta.to_numpy().astype(str)
    assert reasons(source) == {"cv_001.mp3": "missing_sentence", "cv_002.mp3": "missing_client_id"}


def test_save_to_disk_folders(tmp_path) -> None:
    import datasets

    audio_dataset(clip_rows(3)).save_to_disk(str(tmp_path / "single"))
    single = load(f"central={tmp_path / 'single'}")
    assert single.kind == "disk" and len(single.metadata) == 3

    both = datasets.DatasetDict({"train": audio_dataset(clip_rows(3)),
                                 "test": audio_dataset(clip_rows(2, seconds=3.0))})
    both.save_to_disk(str(tmp_path / "dict"))
    source = load(f"valencia={tmp_path / 'dict'}")
    assert source.kind == "disk" and len(source.metadata) == 5
    # splits are concatenated in name order, and bytes are read from the combined table
    assert source.read_bytes([0])[0] == both["test"][0]["audio"]["bytes"]
    np.testing.assert_allclose(source.metadata["duration"][:2], [3.0, 3.1], atol=0.03)


@pytest.mark.parametrize("layout", ["folder", "disk"])
def test_a_dataset_whose_every_row_is_rejected_says_why(layout, tmp_path) -> None:
    rows = [row | {"audio": {"bytes": b"not audio", "path": row["audio"]["path"]}, "accents": ""}
            for row in clip_rows(3)]  # no dialect to be told either: the counts come first
    folder = tmp_path / "mine"
    if layout == "folder":
        write_hub_folder(folder, rows)
    else:
        audio_dataset(rows).save_to_disk(str(folder))
    with pytest.raises(SourceError, match=r": all 3 rows were rejected: 3 [a-z_]+$") as raised:
        load(folder, tmp_path / "cache")
    assert "DIALECT=" not in str(raised.value)


def test_a_duration_column_is_used_without_probing(tmp_path) -> None:
    rows = [row | {"duration": 7.25} for row in clip_rows(2)]
    audio_dataset(rows).save_to_disk(str(tmp_path / "with_duration"))
    assert load(f"central={tmp_path / 'with_duration'}").metadata["duration"].tolist() == [
        7.25, 7.25]


def test_bytes_only_audio_gets_a_name(tmp_path) -> None:
    rows = clip_rows(2)
    for row in rows:
        row["audio"] = {"bytes": row["audio"]["bytes"], "path": None}
    audio_dataset(rows).save_to_disk(str(tmp_path / "nameless"))
    paths = load(f"central={tmp_path / 'nameless'}").metadata["path"].tolist()
    assert paths == ["nameless#0", "nameless#1"]


def test_a_dataset_without_audio(tmp_path) -> None:
    import datasets

    datasets.Dataset.from_dict({"sentence": ["Hola."]}).save_to_disk(str(tmp_path / "text"))
    with pytest.raises(SourceError, match="no 'audio' column"):
        load(f"central={tmp_path / 'text'}")


def test_an_unreadable_folder_is_a_source_error(tmp_path) -> None:
    (tmp_path / "central" / "data").mkdir(parents=True)
    (tmp_path / "central" / "data" / "train-00000-of-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(SourceError, match="cannot load"):
        load(tmp_path / "central", tmp_path / "cache")


def test_source_spec_name() -> None:
    assert SourceSpec("/data/cv_23_ca_balear/").name == "cv_23_ca_balear"


def test_a_clip_listed_twice_is_kept_once_and_the_repeat_is_a_reject(cv_release) -> None:
    from conftest import append_cv_rows, speaker_id
    from parla.store.sources import load_source, parse_source_spec

    release = cv_release({"ana": ("Central", 3)})
    first = (release / "validated.tsv").read_text().splitlines()[1].split("\t")
    append_cv_rows(release, [{"client_id": speaker_id("ana"), "path": first[1],
                              "sentence": "Una altra frase.", "accents": "Central"}])
    source = load_source(parse_source_spec(str(release)))
    assert len(source.metadata) == 3 and source.metadata["path"].is_unique
    assert [(r.source_path, r.dialect, r.reason) for r in source.rejects] == [
        (first[1], "central", "duplicate_path")]
