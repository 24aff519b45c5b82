"""Any Common Voice language: groups found in the data (Spanish accents, Welsh variants), groups
files, per-language text rules, and the Catalan preset unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import HAVE_ESPEAK, RAW_CONDITIONING_FLAGS, speaker_id, write_cv_release
from parla.errors import UsageError
from parla.groups import Registry, group_id, locale_from_name, preset, read_groups_file
from parla.options import PrepareOptions
from parla.store.grouping import Grouping, place_rows

SPANISH = ["Buenos días a todos.", "El hombre camina por la calle.", "Mañana iremos a Sevilla.",
           "¿Quieres venir conmigo?", "Hace mucho calor esta tarde.", "Tengo hambre y sed."]
WELSH = ["Bore da i bawb.", "Mae hi'n braf heddiw.", "Diolch yn fawr iawn.",
         "Ble mae'r orsaf drenau?", "Rydw i'n hoffi coffi.", "Mae'r gath yn cysgu."]
# three accents values, one multi-valued (Canario is no group: no row gives it alone), and two
# rows it cannot place: both groups at once, and no accent at all
SPANISH_SPEAKERS = {"ana": ("Andaluz", 4), "bea": ("Andaluz", 4), "eva": ("Andaluz|Canario", 4),
                    "carlos": ("Rioplatense", 4), "dani": ("Rioplatense", 4),
                    "luis": ("Rioplatense", 4), "fede": ("Andaluz|Rioplatense", 3),
                    "gil": ("", 3)}
WELSH_SPEAKERS = {"nia": ("", 4, "Cymraeg y Gogledd"), "osian": ("", 4, "Cymraeg y Gogledd"),
                  "rhys": ("", 4, "Cymraeg y Gogledd"), "siân": ("", 4, "Cymraeg y De"),
                  "tomos": ("", 4, "Cymraeg y De"), "wyn": ("", 4, "Cymraeg y De"),
                  "ifan": ("Gogledd", 3, "")}


# --- the rule, on values alone ---------------------------------------------------------------

def test_free_text_accents_rule() -> None:
    values = ["Andaluz", "Andaluz", "Rioplatense", "Andaluz|Canario", "Andaluz|Rioplatense", "",
              " andaluz | andaluz ", "Canario|Gallego"]
    placement = place_rows(values, Grouping(None, "accents", 1, "es"))
    assert placement.ids == ["andaluz", "andaluz", "rioplatense", "andaluz", "", "", "andaluz",
                             ""]
    assert {i: reason for i, (reason, _) in placement.reasons.items()} == {
        4: "ambiguous_group", 5: "no_group", 7: "unknown_group"}
    assert list(placement.registry.groups) == ["andaluz", "rioplatense"]
    assert placement.registry.groups["andaluz"].display_name == "Andaluz"


def test_min_group_clips_leaves_small_groups_out_as_rejects() -> None:
    values = ["A", "A", "A", "B", "A|B"]
    placement = place_rows(values, Grouping(None, "accents", 2, "es"))
    # B is given alone once: no group at 2, so "A|B" joins A and the lone B is a reject
    assert placement.ids == ["a", "a", "a", "", "a"]
    assert placement.reasons[3][0] == "small_group"


def test_group_ids_are_slugs_never_reserved_names() -> None:
    assert group_id("España: Norte peninsular") == "espana_norte_peninsular"
    assert group_id("all") == "all_group" and group_id("Packed") == "packed_group"
    assert group_id("普通话").startswith("group_") and group_id("普通话") == group_id(" 普通话 ")


def test_locale_from_release_and_dataset_names() -> None:
    assert locale_from_name("/data/cv-corpus-23.0-2025-09-05/es") == "es"
    assert locale_from_name("pt-BR") == "pt-BR"
    assert locale_from_name("xaviviro/cv_23_ca_central") == "ca"
    assert locale_from_name("cv_ca_demo") == "ca"
    assert locale_from_name("cv-release") is None and locale_from_name("mydata") is None
    assert locale_from_name("/data/cv") is None  # Common Voice, not Chuvash


# --- groups files ----------------------------------------------------------------------------

def test_the_catalan_preset_is_the_dialects() -> None:
    from parla.dialects import DIALECTS

    catalan = preset("ca")
    assert catalan is not None and catalan.language == "ca"
    assert catalan.groups == DIALECTS and preset("es") is None


def test_a_groups_file_absorbs_accent_strings(tmp_path) -> None:
    groups = tmp_path / "groups.yaml"
    groups.write_text("language: es\ngroups:\n  sur:\n    display_name: Español del sur\n"
                      "    voice_name: sur\n    accents: [Andaluz, Canario]\n"
                      "  rioplatense:\n    aliases: [porteño]\n", encoding="utf-8")
    registry = read_groups_file(groups)
    values = ["Andaluz", "Canario|Andaluz", "Rioplatense", "Porteño", "Andaluz|Rioplatense",
              "Mexicano"]
    placement = place_rows(values, Grouping(registry, "accents", 1, "es"))
    assert placement.ids == ["sur", "sur", "rioplatense", "rioplatense", "", ""]
    assert [placement.reasons[i][0] for i in (4, 5)] == ["ambiguous_group", "unknown_group"]


@pytest.mark.parametrize(("text", "message"), [
    ("groups = 3", "expected a `groups` table"),
    ("[groups.a]\nvoice_name = 'x: y'", "voice_name"),
    ("[groups.a]\naccents = ['Sur']\n[groups.b]\naccents = ['sur']", "means two groups"),
    ("[groups.a]\ncolour = 'red'", "unknown key"),
])
def test_a_bad_groups_file_is_a_usage_error(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "groups.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError, match=message):
        read_groups_file(path)


def test_a_language_without_groups_needs_group_by(tmp_path) -> None:
    from parla.store.grouping import grouping_for

    options = PrepareOptions(datasets=(str(tmp_path / "es"),), output_dir="x")
    with pytest.raises(UsageError, match="--group_by"):
        grouping_for(options)
    assert grouping_for(PrepareOptions(datasets=("x/es",), output_dir="x",
                                       group_by="accents")).registry is None
    with pytest.raises(UsageError, match="--group_by"):
        PrepareOptions(datasets=("x",), output_dir="x", group_by="dialect")
    with pytest.raises(UsageError, match="--min_group_clips needs --group_by"):
        PrepareOptions(datasets=("x",), output_dir="x", min_group_clips=5)


# --- text rules ------------------------------------------------------------------------------

def test_text_rules_per_language() -> None:
    from parla.text import rules_for

    catalan, spanish = rules_for("ca"), rules_for("es")
    assert catalan.normalize("col.lecció") == "col·lecció"
    assert spanish.normalize(" \u00abMa\u00f1ana\u00bb\u200b  vamos ") == '"Mañana" vamos'
    assert catalan.invalid_characters("Mañana") == {"ñ"}
    assert spanish.invalid_characters("¿Mañana? Привет 普通话 n\u0303") == set()
    assert spanish.invalid_characters("a = b < c 😀") == {"=", "<", "😀"}
    assert rules_for("pt-BR").language == "default" and rules_for(None).language == "default"


# --- end to end: Spanish accents and Welsh variants ------------------------------------------

def _prepare(release: Path, out: Path, *flags: str) -> None:
    from parla.cli import main

    assert main(["prepare", "-q", "--datasets", str(release), "--output_dir", str(out),
                 "--num_workers", "1", "--min_samples_per_speaker", "1",
                 "--validation_fraction", "0", *RAW_CONDITIONING_FLAGS, *flags]) == 0


def _load(out: Path, config: str, cache: Path) -> list[dict]:
    import datasets

    loaded = datasets.load_dataset(str(out), config, split="train", cache_dir=str(cache))
    return loaded.cast_column("audio", datasets.Audio(decode=False)).to_list()


def _rejects(out: Path) -> dict[str, str]:
    lines = (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()
    return {json.loads(line)["source_path"]: json.loads(line)["reason"] for line in lines}


def _paths_of(release: Path, speaker: str) -> set[str]:
    rows = (release / "validated.tsv").read_text(encoding="utf-8").splitlines()
    return {row.split("\t")[1] for row in rows[1:] if row.split("\t")[0] == speaker_id(speaker)}


def _tokenize(prepared: Path, out: Path, snac_dir: Path, tokenizer: Path) -> dict:
    from parla.options import TokenizeOptions
    from parla.stages.tokenize import tokenize

    tokenize(TokenizeOptions(input_dir=str(prepared), output_dir=str(out),
                             snac_model=str(snac_dir), text_tokenizer=str(tokenizer),
                             device="cpu"))
    return json.loads((out / "tokenization_stats.json").read_text(encoding="utf-8"))


def _word_tokenizer(path: Path, sentences: list[str], voices: list[str]) -> Path:
    from parla.testing import write_word_tokenizer

    return write_word_tokenizer(path, [*sentences, *(f"{voice}:" for voice in voices)])


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_ESPEAK, reason="needs espeak-ng")
def test_spanish_release_grouped_by_accents(tmp_path, snac_dir) -> None:
    release = write_cv_release(tmp_path / "cv-corpus" / "es", SPANISH_SPEAKERS,
                               use_speech=True, sentences=SPANISH, voice="es", locale="es")
    out = tmp_path / "es-prepared"
    _prepare(release, out, "--group_by", "accents")
    assert sorted(p.name for p in (out / "data").iterdir()) == ["andaluz", "rioplatense"]
    andaluz = _load(out, "andaluz", tmp_path / "cache")
    assert len(andaluz) == 12 and all(r["text"].startswith("andaluz: ") for r in andaluz)
    assert {r["speaker_id"] for r in andaluz} == {speaker_id(s) for s in ("ana", "bea", "eva")}
    rio = _load(out, "rioplatense", tmp_path / "cache")
    assert len(rio) == 12 and {r["voice_name"] for r in rio} == {"rioplatense"}
    assert len(_load(out, "all", tmp_path / "cache")) == 24
    texts = " ".join(r["original_text"] for r in andaluz + rio)
    assert "¿" in texts and "ñ" in texts  # Spanish's letters pass the default text rules
    rejects = _rejects(out)
    assert {rejects[p] for p in _paths_of(release, "fede")} == {"ambiguous_group"}
    assert {rejects[p] for p in _paths_of(release, "gil")} == {"no_group"}
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "language:\n- es\n" in card and "- spanish\n" in card and "catalan" not in card
    assert "| andaluz | Andaluz | train |" in card and "`rioplatense:`" in card
    tokenizer = _word_tokenizer(tmp_path / "tok.json", SPANISH, ["andaluz", "rioplatense"])
    stats = _tokenize(out, tmp_path / "es-tokenized", snac_dir, tokenizer)
    assert set(stats["dialects"]) == {"andaluz", "rioplatense"}
    assert stats["total"]["rows"] == 24
    tokenized_card = (tmp_path / "es-tokenized" / "README.md").read_text(encoding="utf-8")
    assert "language:\n- es\n" in tokenized_card and "Rioplatense" in tokenized_card


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_ESPEAK, reason="needs espeak-ng")
def test_welsh_release_grouped_by_variant(tmp_path, snac_dir, capsys) -> None:
    from parla.cli import main

    release = write_cv_release(tmp_path / "cy", WELSH_SPEAKERS, use_speech=True,
                               sentences=WELSH, voice="cy", locale="cy")
    assert main(["groups", str(release), "--group_by", "variant", "-q"]) == 0
    table = capsys.readouterr().out
    assert "cymraeg_y_gogledd  Cymraeg y Gogledd" in table and "3 no_group" in table
    out = tmp_path / "cy-prepared"
    _prepare(release, out, "--group_by", "variant")
    north = _load(out, "cymraeg_y_gogledd", tmp_path / "cache")
    south = _load(out, "cymraeg_y_de", tmp_path / "cache")
    assert len(north) == len(south) == 12
    assert all(r["text"].startswith("cymraeg_y_de: ") for r in south)
    assert len(_load(out, "all", tmp_path / "cache")) == 24
    assert {_rejects(out)[p] for p in _paths_of(release, "ifan")} == {"no_group"}
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "language:\n- cy\n" in card and "Welsh" in card and "Cymraeg y De" in card
    tokenizer = _word_tokenizer(tmp_path / "tok.json", WELSH, ["cymraeg_y_de",
                                                               "cymraeg_y_gogledd"])
    stats = _tokenize(out, tmp_path / "cy-tokenized", snac_dir, tokenizer)
    assert set(stats["dialects"]) == {"cymraeg_y_de", "cymraeg_y_gogledd"}


@pytest.mark.slow
def test_a_groups_file_names_the_configs_and_voices(tmp_path) -> None:
    release = write_cv_release(tmp_path / "es", SPANISH_SPEAKERS, sentences=SPANISH,
                               locale="es")
    groups = tmp_path / "groups.toml"
    groups.write_text("[groups.sur]\ndisplay_name = 'Sur'\nvoice_name = 'sureño'\n"
                      "accents = ['Andaluz']\n", encoding="utf-8")
    out = tmp_path / "out"
    _prepare(release, out, "--group_by", "accents", "--groups", str(groups), "--no_condition_audio")
    rows = _load(out, "sur", tmp_path / "cache")
    assert len(rows) == 15 and all(r["text"].startswith("sureño: ") for r in rows)
    rejects = _rejects(out)
    assert {rejects[p] for p in _paths_of(release, "carlos")} == {"unknown_group"}
    assert {rejects[p] for p in _paths_of(release, "gil")} == {"no_group"}
    # "Andaluz|Rioplatense": the file knows one of the two, so the row is the group's
    assert not _paths_of(release, "fede") & set(rejects)


def test_unknown_accents_are_rejects_in_the_catalan_preset(cv_release) -> None:
    from parla.store.sources import load_source, parse_source_spec

    folder = cv_release({"ana": ("Central", 2), "iu": ("Andalusian", 2)})
    source = load_source(parse_source_spec(str(folder)))
    assert [r.reason for r in source.rejects] == ["unknown_group"] * 2
    assert source.rows_without_dialect == 2


def test_registry_lookup_is_the_dialects_one() -> None:
    registry = Registry.of(preset("ca").groups.values(), "ca")  # type: ignore[union-attr]
    assert registry.find("xaviviro/cv_23_ca_nord_occidental").id == "nord_occidental"
    assert registry.from_accent("Andalusian|valencià").id == "valencia"


def test_a_run_config_takes_the_grouping_keys() -> None:
    from parla.stages.run import build_run_options

    prepare_options, _, _ = build_run_options({
        "output_dir": "x", "datasets": ["/data/es"], "group_by": "accents", "language": "es",
        "groups": "groups.yaml", "min_group_clips": 5})
    assert (prepare_options.group_by, prepare_options.language, prepare_options.groups,
            prepare_options.min_group_clips) == ("accents", "es", "groups.yaml", 5)


def test_a_named_source_of_another_language_prepares_and_is_found_again(demo_corpus, tmp_path,
                                                                        capsys) -> None:
    """NAME=SOURCE with a name outside the Catalan preset: the run ends with its local source
    recorded beside the card (`python -m parla.report` finds the original clips there)."""
    from parla import cli

    out = tmp_path / "out"
    assert cli.main(["prepare", "-q", "--datasets", f"andaluz={demo_corpus}", "--language", "es",
                     "--group_by", "none", "--output_dir", str(out),
                     "--max_samples_per_speaker", "2", "--no_condition_audio"]) == 0
    assert any((out / "data").iterdir())
    recorded = json.loads((out / ".parla_sources.json").read_text())
    assert recorded == {"datasets": [str(Path(demo_corpus).absolute())]}
