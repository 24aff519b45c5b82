"""The names of what a stage writes into its output folder, beside ``data/`` (see `shards`).

One place for them: the stages write these files, the card and the report link to them, and a
rerun recognises a folder by them.
"""

from __future__ import annotations

CARD_FILE = "README.md"
REPORT_FILE = "report.html"
REPORT_DIR = "report"  # report.html's sample clips
STATISTICS_FILE = "dialect_statistics.json"
SPEAKERS_FILE = "speaker_metadata.json"
REJECTS_FILE = "rejects.jsonl"
TOKENIZATION_STATS_FILE = "tokenization_stats.json"
# the local folders a prepare read, for `python -m parla.report`: hidden, never uploaded (the
# card names its sources without their paths)
SOURCES_FILE = ".parla_sources.json"
# everything prepare writes beside data/: an output folder holding only these may be resumed
REPORT_FILES = (STATISTICS_FILE, SPEAKERS_FILE, REJECTS_FILE, CARD_FILE, REPORT_FILE, REPORT_DIR)

PACKED_CONFIG = "packed"  # the config of packed training rows, beside the dialects

# the key of each stage's record in a shard's parquet footer (`shards.read_shard_record`)
PREPARE_STAGE = "prepare"
TOKENIZE_STAGE = "tokenize"
PACK_STAGE = "packed"
