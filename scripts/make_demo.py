#!/usr/bin/env python3
"""Build parla's embedded demo corpus: a tiny raw Common Voice 23 Catalan release.

The speech is real Catalan synthesised with espeak-ng (one voice variant, speed and pitch per
speaker), padded with low microphone-like noise, resampled to 48 kHz mono and encoded as MP3,
exactly as Common Voice ships clips. The folder written has the Common Voice release layout:

    <out>/validated.tsv        unquoted TSV, Common Voice 23 columns
    <out>/clip_durations.tsv   clip -> duration[ms]
    <out>/clips/common_voice_ca_<number>.mp3

Every random choice comes from `--seed`, so the same tools give byte-identical output.
A few rows are broken on purpose (see BAD_ROWS and src/parla/demo/README.md).

Usage:  python scripts/make_demo.py [--out DIR] [--seed 23] [--bitrate 32]
Needs:  espeak-ng and lame on PATH; numpy, scipy, soxr (parla's own dependencies).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr
from scipy.signal import lfilter

SAMPLE_RATE = 48_000  # Common Voice clips are 48 kHz mono MP3
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "parla" / "demo" / "cv_ca_demo"

HEADER = (
    "client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
    "down_votes", "age", "gender", "accents", "variant", "locale", "segment",
)

# Real, varied Catalan sentences: apostrophes, the middle dot, accents, quotes and questions.
SENTENCES: tuple[str, ...] = (
    "Bon dia, com estàs avui?",
    "L'home del barret vermell viu al costat de la plaça.",
    "Els nens van al col·legi cada matí amb l'autobús.",
    "Demà plourà a la costa i farà sol a l'interior.",
    "M'agradaria reservar una taula per a quatre persones.",
    "La biblioteca municipal tanca a les vuit del vespre.",
    "Quina hora és? Encara tenim temps d'agafar el tren.",
    "Va dir «no hi tornaré mai més» i se'n va anar.",
    "La paella s'ha de fer amb foc de llenya i molta paciència.",
    "L'any passat vam visitar Mallorca durant les vacances d'estiu.",
    "El riu Ebre desemboca al delta, prop de Deltebre.",
    "Aquest llibre explica la història de la Corona d'Aragó.",
    "La il·lusió dels infants és el millor regal de Nadal.",
    "Hem de comprar pa, llet, ous i una mica de formatge.",
    "Sabies que la Sagrada Família encara no està acabada?",
    "El meu germà treballa en una empresa de Lleida.",
    "Les oliveres d'aquesta terra tenen més de cent anys.",
    "No t'oblidis de tancar la porta quan surtis.",
    "La cançó que sonava a la ràdio em va fer plorar.",
    "A l'hivern, els Pirineus s'omplen de neu i d'esquiadors.",
    "Perpinyà és la capital de la Catalunya del Nord.",
    "El mercat del dissabte és ple de fruita i verdura fresca.",
    "Qui ha deixat aquesta motxilla damunt la cadira?",
    "L'ajuntament ha aprovat un nou pla per a la mobilitat.",
    "Els castellers van aixecar un pilar de vuit amb folre.",
    "M'estimo més caminar que anar amb cotxe.",
    "La professora ens va demanar que llegíssim en veu alta.",
    "Alacant té platges precioses i un castell damunt la muntanya.",
    "Tortosa és una ciutat antiga travessada pel riu.",
    "El gat dorm tot el dia al sol de la finestra.",
    "Tinc fred; tanca la finestra, si us plau.",
    "Després de sopar, vam sortir a fer un passeig pel port.",
    "La cuina mediterrània fa servir molt d'oli d'oliva.",
    "On és l'estació de tren més propera?",
    "La meva àvia feia les millors coques de recapte del poble.",
    "L'Albufera és un parc natural ple d'ocells i d'arrossars.",
    "El concert començarà a les deu en punt.",
    "Fa molts anys que no veig els meus cosins de Menorca.",
    "Aquesta setmana he llegit dues novel·les d'un autor valencià.",
    "El metge li va receptar repòs i molta aigua.",
    "Cada matí esmorzo pa amb tomàquet i un cafè amb llet.",
    "Els veïns s'han queixat del soroll de les obres.",
    "Què en penses, de la proposta del director?",
    "A la tardor, els boscos es tenyeixen de colors càlids.",
    "La vaga de transports ha col·lapsat el centre de la ciutat.",
    "El fill petit ja sap comptar fins a cent.",
    "Va ploure tota la nit i el camí s'ha omplert de fang.",
    "Palma és la ciutat més poblada de les Illes Balears.",
    "Ens trobarem davant de l'església a les sis.",
    "L'exposició inclou pintures i escultures del segle dinou.",
    "Els pescadors tornen a port abans que surti el sol.",
    "No sé si vindré a la festa, però ho intentaré.",
    "El tren de rodalies arriba amb vint minuts de retard.",
    "La síndria és la fruita preferida de l'estiu.",
    "Hi havia una vegada un drac que vivia en una cova.",
    "El partit d'ahir va acabar amb empat a dos gols.",
    "Podries parlar una mica més a poc a poc, si us plau?",
    "La Mercè és la festa major de Barcelona.",
    'Ha dit "bon profit" abans de començar a dinar.',
    "Els ametllers ja han florit a la plana de Lleida.",
    "Tinc una cita amb el dentista dijous al matí.",
    "La muntanya de Montserrat té una forma molt estranya.",
    "Un paraigua no serveix de res amb aquest vent.",
    # a few short ones and a few long ones, so durations span about 1.5 to 8 seconds
    "Moltes gràcies.",
    "Fins demà!",
    "Bona nit a tothom.",
    "Quin fred que fa!",
    "Quan vam arribar a l'estació, el tren ja havia marxat i vam haver d'esperar gairebé una hora"
    " sota la pluja.",
    "La recerca científica necessita temps, diners i, sobretot, persones amb ganes d'aprendre"
    " coses noves cada dia.",
    "Si voleu participar en el concurs, heu d'enviar les vostres fotografies abans del trenta-u"
    " de desembre.",
    "El poble on va néixer la meva mare és petit, però a l'estiu s'omple de gent que ve de tot"
    " arreu.",
    "Després de molts anys treballant a l'estranger, en Jordi ha decidit tornar a casa i obrir"
    " una llibreria.",
)
SHORT_SENTENCE = "Sí."  # read with almost no padding: the one clip under a second


@dataclass(frozen=True)
class Speaker:
    key: str  # stable name inside this script; the client_id is derived from it
    accents: str  # Common Voice `accents` value: the dialect's display name (+ sub-accents)
    voice: str  # espeak-ng variant appended to the Catalan voice: ca+<voice>
    speed: int  # espeak-ng -s, words per minute
    pitch: int  # espeak-ng -p, 0-99
    gender: str
    age: str
    n_clips: int


# 7 dialects, 3-5 speakers each, 100 clips. c1/c2/v1 have many clips so per-speaker balancing
# bites; c5, v4, b4, s4 and a3 have 1-2 clips so min_samples_per_speaker=3 drops them.
SPEAKERS: tuple[Speaker, ...] = (
    Speaker("c1", "Central", "m3", 165, 45, "male_masculine", "thirties", 10),
    Speaker("c2", "Central", "f2", 155, 60, "female_feminine", "twenties", 8),
    Speaker("c3", "Central|Barceloní", "f4", 170, 55, "female_feminine", "fifties", 4),
    Speaker("c4", "Central", "m1", 145, 35, "male_masculine", "sixties", 3),
    Speaker("c5", "Central", "Mike", 175, 50, "", "", 2),
    Speaker("v1", "Valencià", "m2", 160, 40, "male_masculine", "fourties", 9),
    Speaker("v2", "Valencià", "f1", 150, 65, "female_feminine", "thirties", 4),
    Speaker("v3", "Valencià|Apitxat", "antonio", 170, 50, "male_masculine", "twenties", 3),
    Speaker("v4", "Valencià", "Annie", 165, 70, "female_feminine", "teens", 1),
    Speaker("b1", "Balear|Mallorquí", "f3", 150, 55, "female_feminine", "fourties", 5),
    Speaker("b2", "Balear", "m5", 155, 30, "male_masculine", "fifties", 4),
    Speaker("b3", "Balear", "linda", 160, 62, "female_feminine", "twenties", 3),
    Speaker("b4", "Balear", "pedro", 170, 45, "male_masculine", "thirties", 2),
    Speaker("n1", "Nord-occidental", "m4", 160, 42, "male_masculine", "twenties", 5),
    Speaker("n2", "Nord-occidental", "f5", 165, 58, "female_feminine", "sixties", 4),
    Speaker("n3", "Nord-occidental", "edward", 150, 38, "", "thirties", 3),
    Speaker("s1", "Septentrional", "m6", 155, 48, "male_masculine", "seventies", 4),
    Speaker("s2", "Septentrional", "anika", 160, 66, "female_feminine", "thirties", 3),
    Speaker("s3", "Septentrional", "belinda", 150, 57, "female_feminine", "fourties", 3),
    Speaker("s4", "Septentrional", "miguel", 175, 40, "male_masculine", "twenties", 1),
    Speaker("t1", "Tortosí", "m7", 158, 44, "male_masculine", "fifties", 4),
    Speaker("t2", "Tortosí", "Alicia", 152, 60, "female_feminine", "twenties", 3),
    Speaker("t3", "Tortosí", "david", 168, 36, "male_masculine", "thirties", 3),
    Speaker("a1", "Alacantí", "aunty", 155, 63, "female_feminine", "fourties", 4),
    Speaker("a2", "Alacantí", "m8", 165, 46, "male_masculine", "twenties", 3),
    Speaker("a3", "Alacantí", "steph", 170, 68, "female_feminine", "teens", 2),
)

# Deliberately broken rows, keyed by (speaker key, clip index). All sit on speakers with many
# clips, so dropping them never changes which speakers survive min_samples_per_speaker=3.
BAD_ROWS: dict[tuple[str, int], str] = {
    ("c1", 8): "truncated_mp3",  # file cut mid-frame to 45 % of its bytes
    ("c1", 9): "zero_length",  # empty file
    ("v1", 7): "empty_sentence",  # good audio, empty `sentence` field
    ("v1", 8): "too_short",  # "Sí." with almost no padding: < 1 s
}
# Rows with more down votes than up votes, for vote filters to drop.
DOWNVOTED_ROWS: frozenset[tuple[str, int]] = frozenset({("c2", 3), ("b1", 2), ("n1", 4)})


def sha256_hex(text: str) -> str:
    """64-hex-char digest, the shape of Common Voice client and sentence ids."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def synthesise(text: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    """Catalan speech from espeak-ng as float32 mono in [-1, 1], with its sample rate."""
    wav = subprocess.run(
        ["espeak-ng", "-v", f"ca+{voice}", "-s", str(speed), "-p", str(pitch), "--stdout", text],
        check=True, capture_output=True,
    ).stdout
    return decode_wav16(wav)


def decode_wav16(wav: bytes) -> tuple[np.ndarray, int]:
    """Parse espeak-ng's 16-bit mono RIFF output (its data size field is bogus on a pipe)."""
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise ValueError("espeak-ng did not write a WAV stream")
    sample_rate = int.from_bytes(wav[24:28], "little")
    data_at = wav.index(b"data", 12) + 8
    samples = np.frombuffer(wav[data_at:len(wav) - (len(wav) - data_at) % 2], dtype="<i2")
    return samples.astype(np.float32) / 32768.0, sample_rate


def trim_silence(samples: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Drop espeak-ng's own leading/trailing silence so our padding is the only padding."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return samples[loud[0]:loud[-1] + 1] if loud.size else samples


def microphone_noise(n_samples: int, level_dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """Low, slightly dark background noise at an RMS of `level_dbfs` (a volunteer's room/mic)."""
    white = rng.standard_normal(n_samples)
    dark = lfilter([1.0], [1.0, -0.9], white)  # one-pole low-pass: hum-ish rather than hiss
    dark /= np.sqrt(np.mean(dark**2)) + 1e-12
    return (dark * 10 ** (level_dbfs / 20)).astype(np.float32)


def compose_clip(
    speech: np.ndarray, speech_rate: int, lead_s: float, trail_s: float, peak_dbfs: float,
    noise_dbfs: float, rng: np.random.Generator,
) -> np.ndarray:
    """Speech at 48 kHz, peak-normalised, with silence padding and noise under the whole clip."""
    speech = soxr.resample(trim_silence(speech), speech_rate, SAMPLE_RATE).astype(np.float32)
    speech *= 10 ** (peak_dbfs / 20) / (np.max(np.abs(speech)) + 1e-12)
    lead, trail = round(lead_s * SAMPLE_RATE), round(trail_s * SAMPLE_RATE)
    clip = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(trail, np.float32)])
    return np.clip(clip + microphone_noise(clip.size, noise_dbfs, rng), -1.0, 1.0)


def encode_mp3(samples: np.ndarray, bitrate_kbps: int) -> bytes:
    """48 kHz mono CBR MP3 via lame; --resample 48 stops lame from lowering the rate at low kbps."""
    pcm = np.round(samples * 32767.0).astype("<i2").tobytes()
    return subprocess.run(
        ["lame", "--quiet", "-r", "-s", "48", "--bitwidth", "16", "--signed", "--little-endian",
         "-m", "m", "-b", str(bitrate_kbps), "--cbr", "--resample", "48", "-q", "2",
         "-", "-"],
        input=pcm, check=True, capture_output=True,
    ).stdout


def plan_rows(seed: int) -> list[dict]:
    """Every clip to make, with all random choices drawn from `seed`."""
    rng = random.Random(seed)
    numbers = rng.sample(range(38_000_000, 42_000_000), sum(s.n_clips for s in SPEAKERS))
    rows = []
    for speaker in SPEAKERS:
        peak_dbfs = rng.uniform(-10.0, -2.0)  # speakers record at different loudness
        noise_dbfs = rng.uniform(-64.0, -52.0)
        sentences = rng.sample(SENTENCES, speaker.n_clips)
        for index, sentence in enumerate(sentences):
            bad = BAD_ROWS.get((speaker.key, index), "")
            spoken = SHORT_SENTENCE if bad == "too_short" else sentence
            short = bad == "too_short"
            up, down = rng.randint(2, 5), rng.randint(0, 1)
            if (speaker.key, index) in DOWNVOTED_ROWS:
                up, down = rng.randint(0, 1), rng.randint(2, 3)
            rows.append({
                "speaker": speaker,
                "bad": bad,
                "spoken": spoken,
                "sentence": "" if bad == "empty_sentence" else spoken,
                "path": f"common_voice_ca_{numbers.pop()}.mp3",
                "up_votes": up,
                "down_votes": down,
                "lead_s": rng.uniform(0.08, 0.12) if short else rng.uniform(0.3, 0.8),
                "trail_s": rng.uniform(0.08, 0.12) if short else rng.uniform(0.3, 0.8),
                "peak_dbfs": peak_dbfs,
                "noise_dbfs": noise_dbfs,
                "noise_seed": rng.getrandbits(32),
            })
    rng.shuffle(rows)  # Common Voice releases are not grouped by speaker
    return rows


def tsv_line(fields: list[str]) -> str:
    """One unquoted TSV line, as Common Voice writes them (quotes inside fields stay raw)."""
    for field in fields:
        if any(ch in field for ch in "\t\r\n"):
            raise ValueError(f"field cannot be written unquoted: {field!r}")
    return "\t".join(fields) + "\n"


def clean_output(out: Path) -> None:
    """Remove only files this script writes, so a rerun leaves no stale clips."""
    for name in ("validated.tsv", "clip_durations.tsv"):
        (out / name).unlink(missing_ok=True)
    for clip in (out / "clips").glob("common_voice_ca_*.mp3"):
        clip.unlink()


def build(out: Path, seed: int, bitrate_kbps: int) -> dict[str, str]:
    """Write the whole demo release into `out`; returns {clip path: defect} of the bad rows."""
    for tool in ("espeak-ng", "lame"):
        if shutil.which(tool) is None:
            sys.exit(f"make_demo: {tool} is not on PATH")
    (out / "clips").mkdir(parents=True, exist_ok=True)
    clean_output(out)
    validated = [tsv_line(list(HEADER))]
    durations = {}
    bad_clips = {}
    for row in plan_rows(seed):
        speaker: Speaker = row["speaker"]
        speech, rate = synthesise(row["spoken"], speaker.voice, speaker.speed, speaker.pitch)
        clip = compose_clip(speech, rate, row["lead_s"], row["trail_s"], row["peak_dbfs"],
                            row["noise_dbfs"], np.random.default_rng(row["noise_seed"]))
        mp3 = encode_mp3(clip, bitrate_kbps)
        durations[row["path"]] = round(clip.size * 1000 / SAMPLE_RATE)
        if row["bad"] == "truncated_mp3":
            mp3 = mp3[: int(len(mp3) * 0.45) + 7]  # +7: cut inside a frame, not on a boundary
        elif row["bad"] == "zero_length":
            mp3 = b""
            durations[row["path"]] = 0
        (out / "clips" / row["path"]).write_bytes(mp3)
        if row["bad"]:
            bad_clips[row["path"]] = row["bad"]
        validated.append(tsv_line([
            sha256_hex(f"parla-demo/{seed}/speaker/{speaker.key}"),
            row["path"],
            sha256_hex(row["sentence"]) if row["sentence"] else "",
            row["sentence"],
            "",  # sentence_domain: mostly empty in Common Voice
            str(row["up_votes"]),
            str(row["down_votes"]),
            speaker.age,
            speaker.gender,
            speaker.accents,
            "",  # variant
            "ca",
            "",  # segment
        ]))
    with open(out / "validated.tsv", "w", encoding="utf-8", newline="") as handle:
        handle.writelines(validated)
    with open(out / "clip_durations.tsv", "w", encoding="utf-8", newline="") as handle:
        handle.write(tsv_line(["clip", "duration[ms]"]))
        handle.writelines(tsv_line([clip, str(ms)]) for clip, ms in sorted(durations.items()))
    return bad_clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="release folder to write")
    parser.add_argument("--seed", type=int, default=23, help="seed of every random choice")
    parser.add_argument("--bitrate", type=int, default=32, choices=(32, 40, 48, 56, 64),
                        help="MP3 bitrate in kbps (CBR)")
    args = parser.parse_args()
    bad_clips = build(args.out, args.seed, args.bitrate)
    print(f"wrote {args.out}")
    for clip, defect in sorted(bad_clips.items(), key=lambda item: item[1]):
        print(f"  bad row: {clip}  {defect}")


if __name__ == "__main__":
    main()
