"""Reports written next to the data: statistics, speaker metadata, rejects, and the summary.

Every report is rebuilt from the shards' footer records (and the sources' early rejects), so a
resumed run writes the same reports as an uninterrupted one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from parla.store.files import write_jsonl


def sort_rejects(rejects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every rejected row, in a fixed order (the file must not depend on scheduling)."""
    first = ("source_path", "dialect", "reason", "detail")  # a line reads in this order
    ordered = [{key: r[key] for key in first if key in r} | {k: v for k, v in r.items()
                                                             if k not in first}
               for r in rejects]
    return sorted(ordered, key=lambda r: (r.get("dialect") or "", r["source_path"],
                                                  r.get("config") or "", r["reason"],
                                                  r.get("detail") or ""))


def count_rejects(rejects: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Rejects per dialect and reason."""
    counts: dict[str, dict[str, int]] = {}
    for reject in rejects:
        by_reason = counts.setdefault(reject.get("dialect") or "unknown", {})
        by_reason[reject["reason"]] = by_reason.get(reject["reason"], 0) + 1
    return counts


def write_rejects(path: str | os.PathLike, rejects: Iterable[Mapping[str, Any]]) -> int:
    """rejects.jsonl, sorted, one line per rejected row; returns how many."""
    ordered = sort_rejects(rejects)
    write_jsonl(path, ordered)
    return len(ordered)


def format_counts_table(title: str, steps: Iterable[Mapping[str, Any]]) -> str:
    """The per-step table that --dry_run and the final summary print."""
    lines = [title, f"  {'step':<26}{'rows':>9}{'speakers':>10}{'hours':>10}"]
    for step in steps:
        lines.append(f"  {step['step']:<26}{step['rows']:>9}{step['speakers']:>10}"
                     f"{step['hours']:>10.2f}")
    return "\n".join(lines)


def format_summary(statistics: Mapping[str, Any]) -> str:
    """Final summary like the original scripts': rows, speakers, samples/speaker, hours."""
    lines = ["", "=" * 72, f"{'dialect':<18}{'rows':>8}{'speakers':>10}{'per spk':>9}"
             f"{'hours':>8}{'rejected':>10}", "-" * 72]
    for name, dialect in statistics["dialects"].items():
        out = dialect["output"]
        lines.append(f"{name:<18}{out['rows']:>8}{out['speakers']:>10}"
                     f"{out['samples_per_speaker']:>9.1f}{out['hours']:>8.2f}"
                     f"{sum(dialect['rejected'].values()):>10}")
    total = statistics["total"]
    lines += ["-" * 72, f"{'total':<18}{total['rows']:>8}{total['speakers']:>10}"
              f"{total['samples_per_speaker']:>9.1f}{total['hours']:>8.2f}"
              f"{total['rejected']:>10}",
              f"all: {total['train_rows']} train / {total['validation_rows']} validation rows, "
              f"{total['validation_speakers']} validation speakers (none in train)", "=" * 72]
    return "\n".join(lines)


# --- prepare statistics ----------------------------------------------------------------------

def _output_counts(rows: pd.DataFrame) -> dict[str, Any]:
    speakers = int(rows["speaker_id"].nunique()) if len(rows) else 0
    hours = float(rows["duration"].sum()) / 3600 if len(rows) else 0.0
    return {"rows": len(rows), "speakers": speakers,
            "samples_per_speaker": round(len(rows) / speakers, 2) if speakers else 0.0,
            "hours": round(hours, 4),
            "mean_duration": round(float(rows["duration"].mean()), 3) if len(rows) else 0.0}


def conditioning_effect(rows: pd.DataFrame, removed: Mapping[str, float]) -> dict[str, Any]:
    """Before/after figures of conditioning on kept rows, and the hours each rule removed
    (``removed``: seconds of the rejected clips per reason)."""
    def mean(column: str) -> float | None:
        values = rows[column].dropna() if column in rows else pd.Series(dtype=float)
        return round(float(values.mean()), 4) if len(values) else None

    def spread(column: str) -> float | None:
        values = rows[column].dropna() if column in rows else pd.Series(dtype=float)
        return round(float(values.std(ddof=0)), 3) if len(values) else None

    hours_removed: dict[str, float] = {}
    if "duration_s_before" in rows and "duration_s_after" in rows:
        trimmed = (rows["duration_s_before"] - rows["duration_s_after"]).sum()
        hours_removed["trimming"] = round(float(trimmed) / 3600, 4)
    for reason, seconds in removed.items():
        hours_removed[reason] = hours_removed.get(reason, 0.0) + seconds / 3600
    return {
        "leading_silence_s": {"before": mean("leading_silence_s_before"),
                              "after": mean("leading_silence_s_after")},
        "trailing_silence_s": {"before": mean("trailing_silence_s_before"),
                               "after": mean("trailing_silence_s_after")},
        "lufs_std": {"before": spread("lufs_before"), "after": spread("lufs_after")},
        "mean_snr_db": mean("snr_db"),
        "hours_removed": {reason: round(hours, 4) for reason, hours in
                          sorted(hours_removed.items())},
    }


def clips_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Every kept clip of the run, one row each, from the shards' records (no audio read)."""
    parts = [pd.DataFrame(record["clips"]).assign(dialect=record["config"],
                                                  split=record["split"])
             for record in records if record["rows"]]
    columns = ["dialect", "split", "source_path", "speaker_id", "gender", "age", "duration",
               "backfilled"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def _sum_removed(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    removed: dict[str, float] = {}
    for record in records:
        for reason, seconds in record["removed_seconds"].items():
            removed[reason] = removed.get(reason, 0.0) + seconds
    return removed


def build_statistics(parameters: Mapping[str, Any], counts: Mapping[str, list[Any]],
                     records: list[Mapping[str, Any]], rejects: list[Mapping[str, Any]],
                     rows_without_dialect: int) -> dict[str, Any]:
    """dialect_statistics.json: selection steps, rejects, output and conditioning per dialect.

    ``counts`` are the selection steps per dialect, ``records`` the shards' footer records,
    ``rejects`` every rejected row (the sources' and the shards'). Nothing in it depends on
    how the run went (no timings), so a resumed run writes the same file.
    """
    clips = clips_table(records)
    by_reason = count_rejects(rejects)
    dialects = {}
    for dialect, steps in counts.items():
        mine = clips[clips["dialect"] == dialect]
        own = [r for r in records if r["config"] == dialect]
        dialects[dialect] = {
            "steps": [s.to_dict() for s in steps],
            "rejected": dict(sorted(by_reason.get(dialect, {}).items())),
            "output": _output_counts(mine) | {
                "backfilled": int(mine["backfilled"].sum()) if len(mine) else 0,
                "speakers_short_of_quota": sum(r["short_speakers"] for r in own),
                "quality_dropped": sum(len(r["quality_dropped"]) for r in own)},
            "conditioning": conditioning_effect(mine, _sum_removed(own)),
        }
    validation = clips[clips["split"] == "validation"]
    total = _output_counts(clips) | {
        "conditioning": conditioning_effect(clips, _sum_removed(records)),
        "clips_measured": int(clips["duration_s_after"].notna().sum())
        if "duration_s_after" in clips else 0,
        "backfilled": int(clips["backfilled"].sum()) if len(clips) else 0,
        "rejected": len(rejects),
        "train_rows": int((clips["split"] == "train").sum()),
        "validation_rows": len(validation),
        "validation_speakers": int(validation["speaker_id"].nunique()),
        "rows_without_dialect": rows_without_dialect}
    if "dnsmos_ovrl" in clips and clips["dnsmos_ovrl"].notna().any():
        total["mean_dnsmos_ovrl"] = round(float(clips["dnsmos_ovrl"].mean()), 3)
    return {"parameters": dict(parameters), "dialects": dialects, "total": total}


def speaker_metadata(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """speaker_metadata.json: dialect, gender, age, split, clips and seconds of each speaker."""
    speakers: dict[str, dict[str, Any]] = {}
    for row in clips_table(records).to_dict("records"):
        entry = speakers.setdefault(row["speaker_id"], {
            "dialect": row["dialect"], "gender": row["gender"], "age": row["age"],
            "split": row["split"], "clips": 0, "seconds": 0.0})
        entry["clips"] += 1
        entry["seconds"] = round(entry["seconds"] + float(row["duration"]), 3)
    return dict(sorted(speakers.items()))
