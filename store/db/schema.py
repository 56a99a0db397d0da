"""The metadata schema (SQLAlchemy models). Its history, revision by revision, is in
:mod:`whyclip.store.db.migrations` (Alembic); the models here are always its head.

Tables: ``meta`` (store id, schema version), ``libraries`` (one row per library
*version*), ``classes`` and ``descriptors``, the embedding cache, evaluation runs
(``eval_runs``, ``eval_images``, ``eval_results``), their ``calibrations``, the LLM answer cache
(``llm_answers``) and the precision verdicts (``precision_verdicts``), at the end of the file.
A version's descriptor keys are contiguous (``first_descriptor_id + position``), so a
retrieval hit's row position maps to its key without a lookup. Library vectors live in index files, not in the database.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    inspect,
)
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

READY = "ready"
BUILDING = "building"


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware datetime, stored in UTC. SQLite keeps no offset and gives naive
    datetimes back; every datetime read through this type is aware, in UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps timezone-aware times")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class LibraryRow(Base):
    """One version of a named library. Readers only ever see ``status == 'ready'``."""

    __tablename__ = "libraries"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=BUILDING)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    encoder_id: Mapped[str] = mapped_column(String(300))
    encoder_name: Mapped[str] = mapped_column(Text)
    dim: Mapped[int] = mapped_column(Integer)
    logit_scale: Mapped[float] = mapped_column(Float)
    template: Mapped[str] = mapped_column(Text)
    baseline_template: Mapped[str] = mapped_column(Text)
    aggregate: Mapped[str] = mapped_column(String(16), default="mean")
    n_classes: Mapped[int] = mapped_column(Integer, default=0)
    n_descriptors: Mapped[int] = mapped_column(Integer, default=0)
    n_prompts: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(Text, default="")
    source_sha256: Mapped[str] = mapped_column(String(64), default="")
    index_key: Mapped[str] = mapped_column(String(64))
    index_factory: Mapped[str] = mapped_column(String(200), default="Flat")
    recall_at_10: Mapped[float] = mapped_column(Float, default=1.0)  # of the retrieval index vs exact
    # schema 2: the retrieval index's chosen parameters (JSON), and the key of the version's
    # first descriptor: its descriptors have keys first_descriptor_id + position in label order
    index_params: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)
    first_descriptor_id: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    # revision 0004: the versioned rule that built the prompts (whyclip.store.method.prompts.rule_name);
    # nullable only because SQLite cannot add a NOT NULL column without a default
    prompt_rule: Mapped[str | None] = mapped_column(String(32), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)  # revision 0009


class ClassRow(Base):
    __tablename__ = "classes"
    __table_args__ = (Index("ix_classes_library_position", "library_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    library_id: Mapped[int] = mapped_column(ForeignKey("libraries.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(Text)
    baseline_prompt: Mapped[str] = mapped_column(Text)  # exactly as embedded
    n_descriptors: Mapped[int] = mapped_column(Integer)


class DescriptorRow(Base):
    __tablename__ = "descriptors"
    # Schema 2 drops ("class_id", "position"): a class's descriptors are a key range.
    __table_args__ = (Index("ix_descriptors_library_text", "library_id", "text"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Schema 2 drops the index on library_id alone: (library_id, text) serves equality on
    # library_id, and a version's descriptors are a key range.
    library_id: Mapped[int] = mapped_column(ForeignKey("libraries.id", ondelete="CASCADE"))
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str] = mapped_column(Text)  # exactly as embedded (revision 0004 filled the "" of older stores)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    shared: Mapped[int] = mapped_column(Integer, default=1)  # classes in the library with this text


class SharedTextRow(Base):
    """A descriptor text that several classes of a library share, written at ingest."""

    __tablename__ = "shared_texts"
    __table_args__ = (Index("ix_shared_texts_library_classes", "library_id", "classes"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    library_id: Mapped[int] = mapped_column(ForeignKey("libraries.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    classes: Mapped[int] = mapped_column(Integer)
    examples: Mapped[str] = mapped_column(Text)  # the first few classes with it, in label order


class EmbeddingRow(Base):
    """The embedding cache: one vector per (encoder, prompt text), shared by every library
    and version, so re-ingesting embeds only new prompts and a killed ingest resumes."""

    __tablename__ = "embeddings"
    __table_args__ = (UniqueConstraint("encoder_key", "text_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    encoder_key: Mapped[str] = mapped_column(String(300))
    text_sha256: Mapped[str] = mapped_column(String(64))
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # unit vector, float32 little-endian
    norm: Mapped[float] = mapped_column(Float)


class EvalRunRow(Base):
    """One evaluation of a library version on a labelled image set (``whyclip eval``)."""

    __tablename__ = "eval_runs"
    __table_args__ = (UniqueConstraint("library_name", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    library_id: Mapped[int] = mapped_column(ForeignKey("libraries.id", ondelete="CASCADE"), index=True)
    library_name: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    dataset: Mapped[str] = mapped_column(Text)
    encoder_key: Mapped[str] = mapped_column(String(300))
    n_images: Mapped[int] = mapped_column(Integer)
    details: Mapped[str] = mapped_column(Text, default="{}")  # JSON: skipped files, unmatched labels, control


class EvalImageRow(Base):
    """An image of a run: its file, true class and unit vector (so audits need no model)."""

    __tablename__ = "eval_images"
    __table_args__ = (Index("ix_eval_images_run_position", "run_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    label: Mapped[int] = mapped_column(Integer)  # class position in the library version
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # unit vector, float32 little-endian


class EvalResultRow(Base):
    """One image scored one way: an aggregate of the descriptors, the baseline, or the
    random-word control; the top classes with scores, and where the true class ranked."""

    __tablename__ = "eval_results"
    __table_args__ = (Index("ix_eval_results_run_method", "run_id", "method"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)  # the image's position in the run
    method: Mapped[str] = mapped_column(String(32))
    top: Mapped[str] = mapped_column(Text)  # JSON [[class position, score], ...], best first
    true_score: Mapped[float] = mapped_column(Float)
    true_rank: Mapped[int] = mapped_column(Integer)  # 1 = predicted


class CalibrationRow(Base):
    """A calibration of a library version's probabilities (``whyclip calibrate``), fitted on
    a seeded split of one of its runs: the temperature, the per-class biases (JSON by class
    position, or null) and the report with the held-out figures before and after. The
    newest of a version (and aggregate) is the one ``explain --calibrated`` uses."""

    __tablename__ = "calibrations"
    __table_args__ = (Index("ix_calibrations_library_aggregate", "library_id", "aggregate"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    library_id: Mapped[int] = mapped_column(ForeignKey("libraries.id", ondelete="CASCADE"))
    run_id: Mapped[int] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"), index=True)
    aggregate: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int] = mapped_column(Integer)
    fit_fraction: Mapped[float] = mapped_column(Float)
    temperature: Mapped[float] = mapped_column(Float)
    biases: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON [bias of class 0, ...], or null
    ece_before: Mapped[float] = mapped_column(Float)  # held-out figures, also in ``report``
    ece_after: Mapped[float] = mapped_column(Float)
    nll_before: Mapped[float] = mapped_column(Float)
    nll_after: Mapped[float] = mapped_column(Float)
    report: Mapped[str] = mapped_column(Text)  # JSON: the whole calibrate report (bins, intervals, notes)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


EVAL_TABLES = ("eval_runs", "eval_images", "eval_results")


def missing_columns(conn: Connection) -> list[str]:
    """``table.column`` for every column the models have and the database lacks (a database
    written by an unreleased development version)."""
    found = inspect(conn)
    out = []
    for table in Base.metadata.sorted_tables:
        if found.has_table(table.name):
            have = {c["name"] for c in found.get_columns(table.name)}
            out += [f"{table.name}.{c.name}" for c in table.columns if c.name not in have]
    return out


class LLMAnswerRow(Base):
    """One chat-completions answer of ``whyclip generate``, keyed by the sha256 of the request
    (base URL, model, the full prompt, the parameters), so a rerun sends no request. It keeps
    the provenance of the answer; never an API key."""

    __tablename__ = "llm_answers"

    request_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    base_url: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(300))
    prompt: Mapped[str] = mapped_column(Text)  # the user message as sent
    parameters: Mapped[str] = mapped_column(Text)  # JSON: temperature, max_tokens, structured, sample
    answer: Mapped[str] = mapped_column(Text)  # the raw content of the answer ("" when empty)
    mode: Mapped[str] = mapped_column(String(32))  # "list", "structured" or "list-fallback"
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ClassPairRow(Base):
    """A pair of classes of a library version with contrastive (differential) descriptors,
    FuDD's paired descriptions (revision 0007). ``class_a`` < ``class_b`` (class positions);
    the descriptions are :class:`PairDescriptorRow`, never rows of the classes' own lists.
    Provenance: where the pair was chosen from, the LLM (server, model, the question as
    sent, the answer's key in ``llm_answers``) and when it was generated and stored.
    ``content_sha256`` identifies the descriptions (class names, texts, prompts, encoder)."""

    __tablename__ = "class_pairs"
    __table_args__ = (UniqueConstraint("library_id", "class_a", "class_b"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    library_id: Mapped[int] = mapped_column(ForeignKey("libraries.id", ondelete="CASCADE"), index=True)
    class_a: Mapped[int] = mapped_column(Integer)
    class_b: Mapped[int] = mapped_column(Integer)
    content_sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)  # JSON: how the pair was chosen (a run's confusions, ambiguous images)
    base_url: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(300))
    question: Mapped[str] = mapped_column(Text)  # the user message as sent
    request_sha256: Mapped[str] = mapped_column(String(64))  # its answer in llm_answers ("" when unknown)
    generated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    stored_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    encoder_key: Mapped[str] = mapped_column(String(300))  # the cache key the vectors were embedded under


class PairDescriptorRow(Base):
    """One side of a feature of a class pair: the description of ``class_position``'s look
    (``feature`` numbers the pair's features; each has a row for both classes), the prompt
    exactly as embedded (the library's template) and its unit vector, kept in the row so a
    pair is written, read and deleted in one transaction with its class pair."""

    __tablename__ = "pair_descriptors"
    __table_args__ = (Index("ix_pair_descriptors_pair", "pair_id", "feature"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("class_pairs.id", ondelete="CASCADE"))
    feature: Mapped[int] = mapped_column(Integer)
    class_position: Mapped[int] = mapped_column(Integer)
    attribute: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str] = mapped_column(Text)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # unit vector, float32 little-endian
    norm: Mapped[float] = mapped_column(Float)


class PrecisionVerdictRow(Base):
    """Whether a lower numeric precision (or the prefix-sharing text path) gives an encoder's
    fp32 vectors, checked once and remembered (:mod:`whyclip.store.db.precision_verdicts`). The key is
    the sha256 of what the verdict holds for: the encoder id (its weights), the modality,
    the precision, the path, the check's rule and the platform (torch and transformers
    versions, the device's instruction set or GPU model)."""

    __tablename__ = "precision_verdicts"

    key_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    encoder_id: Mapped[str] = mapped_column(String(300))
    modality: Mapped[str] = mapped_column(String(16))
    precision: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(200))
    platform: Mapped[str] = mapped_column(Text)
    passed: Mapped[bool] = mapped_column(Boolean)
    cosine: Mapped[float] = mapped_column(Float)  # the lowest cosine with fp32 on the check sample
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
