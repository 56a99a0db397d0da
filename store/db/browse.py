"""Browse a library's classes and descriptors page by page, in the database: search,
sort, count and page there, along indexes, so a million-descriptor library never loads
into memory and a page costs milliseconds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, SQLColumnExpression, false, func, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from whyclip.store.db.schema import ClassRow, DescriptorRow, SharedTextRow
from whyclip.store.records import LibraryInfo

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's from Python 3.11

# Descriptor ids ascend in label order (class, then descriptor position): paging by id walks an index.
DESCRIPTOR_ORDERS = {
    "label order": (DescriptorRow.id,),
    "descriptor (A-Z)": (DescriptorRow.text, DescriptorRow.id),
    "most shared first": (DescriptorRow.shared.desc(), DescriptorRow.id),
}
CLASS_ORDERS = {
    "label order": (ClassRow.position,),
    "class name": (ClassRow.name, ClassRow.position),
    "fewest descriptors": (ClassRow.n_descriptors, ClassRow.position),
    "most descriptors": (ClassRow.n_descriptors.desc(), ClassRow.position),
}


def _like(column: SQLColumnExpression[str], term: str) -> ColumnElement[bool]:
    if "\x00" in term:  # no stored text holds a NUL (and SQLite's LIKE would stop at it, matching all)
        return false()
    escaped = term.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.ilike(f"%{escaped}%", escape="\\")


def _descriptor_rows(info: LibraryInfo, search: str, order: str = "label order") -> Select[Unpack[tuple[Any, ...]]]:
    q = select(
        ClassRow.name,
        ClassRow.position,
        DescriptorRow.text,
        DescriptorRow.prompt,
        DescriptorRow.shared,
        DescriptorRow.truncated,
    ).join(ClassRow, ClassRow.id == DescriptorRow.class_id)
    if info.first_descriptor_id is None or order != "label order":  # (library, text) serves A-Z order
        q = q.where(DescriptorRow.library_id == info.id)
    else:  # the version's key range alone (SQLite would prefer the (library, text) index): walks the key
        q = q.where(
            DescriptorRow.id.between(info.first_descriptor_id, info.first_descriptor_id + info.n_descriptors - 1)
        )
    if search.strip():
        q = q.where(
            or_(_like(ClassRow.name, search), _like(DescriptorRow.text, search), _like(DescriptorRow.prompt, search))
        )
    return q


def _class_rows(info: LibraryInfo, search: str) -> Select[Unpack[tuple[Any, ...]]]:
    q = select(ClassRow.position, ClassRow.name, ClassRow.n_descriptors, ClassRow.baseline_prompt).where(
        ClassRow.library_id == info.id
    )
    return q.where(_like(ClassRow.name, search)) if search.strip() else q


def _shared_texts(info: LibraryInfo) -> Select[Unpack[tuple[Any, ...]]]:
    return select(SharedTextRow.text, SharedTextRow.classes).where(SharedTextRow.library_id == info.id)


def _count(engine: Engine, q: Select[Unpack[tuple[Any, ...]]]) -> int:
    with Session(engine) as s:
        return int(s.scalar(select(func.count()).select_from(q.subquery())) or 0)


def count_descriptor_rows(engine: Engine, info: LibraryInfo, search: str = "") -> int:
    if not search.strip():
        return info.n_descriptors
    return _count(engine, _descriptor_rows(info, search))


def count_classes(engine: Engine, info: LibraryInfo, search: str = "") -> int:
    if not search.strip():
        return info.n_classes
    return _count(engine, _class_rows(info, search))


def count_shared_descriptors(engine: Engine, info: LibraryInfo) -> int:
    return _count(engine, _shared_texts(info))


def descriptors_page(
    engine: Engine, info: LibraryInfo, search: str = "", order: str = "label order", offset: int = 0, limit: int = 50
) -> list[dict[str, Any]]:
    """One page of (class, descriptor, prompt) rows with how many classes share each text.
    Classes without descriptors are listed by :func:`classes_page`."""
    with Session(engine) as s:
        rows = s.execute(
            _descriptor_rows(info, search, order).order_by(*DESCRIPTOR_ORDERS[order]).offset(offset).limit(limit)
        ).all()
    return [
        {
            "class": r.name,
            "label": r.position,
            "descriptor": r.text,
            "prompt": r.prompt,
            "classes sharing it": r.shared,
            "truncated": bool(r.truncated),
        }
        for r in rows
    ]


def classes_page(
    engine: Engine, info: LibraryInfo, search: str = "", order: str = "label order", offset: int = 0, limit: int = 50
) -> list[dict[str, Any]]:
    """One page of classes with their descriptor counts and baseline prompts."""
    with Session(engine) as s:
        rows = s.execute(_class_rows(info, search).order_by(*CLASS_ORDERS[order]).offset(offset).limit(limit)).all()
    return [
        {"label": r.position, "class": r.name, "descriptors": r.n_descriptors, "baseline prompt": r.baseline_prompt}
        for r in rows
    ]


def shared_descriptors_page(
    engine: Engine, info: LibraryInfo, offset: int = 0, limit: int = 50
) -> list[dict[str, Any]]:
    """Descriptor texts several classes share (they cannot tell those classes apart), most shared first."""
    with Session(engine) as s:
        rows = s.execute(
            select(SharedTextRow.text, SharedTextRow.classes, SharedTextRow.examples)
            .where(SharedTextRow.library_id == info.id)
            .order_by(SharedTextRow.classes.desc(), SharedTextRow.text)
            .offset(offset)
            .limit(limit)
        ).all()
    return [
        {"descriptor": r.text, "classes": r.classes, "in": r.examples + (" ..." if r.classes > 8 else "")} for r in rows
    ]
