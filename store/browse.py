"""Browse a library's classes and descriptors page by page, in the database: search,
sort, count and page there, so a million-descriptor library never loads into memory."""

from __future__ import annotations

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from .library import LibraryInfo, Store
from .schema import ClassRow, DescriptorRow

DESCRIPTOR_ORDERS = {
    "label order": (ClassRow.position, DescriptorRow.position),
    "class name": (ClassRow.name, DescriptorRow.position),
    "descriptor": (DescriptorRow.text, ClassRow.position),
}
CLASS_ORDERS = {
    "label order": (ClassRow.position,),
    "class name": (ClassRow.name, ClassRow.position),
    "fewest descriptors": (ClassRow.n_descriptors, ClassRow.position),
    "most descriptors": (ClassRow.n_descriptors.desc(), ClassRow.position),
}


def _like(column, term: str):
    escaped = term.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.ilike(f"%{escaped}%", escape="\\")


def _descriptor_rows(info: LibraryInfo, search: str) -> Select:
    """Every class with its descriptors; a class without any is one row with no descriptor."""
    q = (
        select(ClassRow.name, ClassRow.position, DescriptorRow.text, DescriptorRow.prompt, DescriptorRow.truncated)
        .outerjoin(DescriptorRow, DescriptorRow.class_id == ClassRow.id)
        .where(ClassRow.library_id == info.id)
    )
    if search.strip():
        q = q.where(or_(_like(ClassRow.name, search), _like(DescriptorRow.text, search), _like(DescriptorRow.prompt, search)))
    return q


def _class_rows(info: LibraryInfo, search: str) -> Select:
    q = select(ClassRow.position, ClassRow.name, ClassRow.n_descriptors, ClassRow.baseline_prompt).where(
        ClassRow.library_id == info.id
    )
    return q.where(_like(ClassRow.name, search)) if search.strip() else q


def _shared_texts(info: LibraryInfo):
    n = func.count(func.distinct(DescriptorRow.class_id)).label("n")
    q = select(DescriptorRow.text, n).where(DescriptorRow.library_id == info.id).group_by(DescriptorRow.text)
    return q.having(n > 1), n


def _count(store: Store, q: Select) -> int:
    with Session(store.engine) as s:
        return int(s.scalar(select(func.count()).select_from(q.subquery())) or 0)


def count_descriptor_rows(store: Store, info: LibraryInfo, search: str = "") -> int:
    return _count(store, _descriptor_rows(info, search))


def count_classes(store: Store, info: LibraryInfo, search: str = "") -> int:
    return _count(store, _class_rows(info, search))


def count_shared_descriptors(store: Store, info: LibraryInfo) -> int:
    return _count(store, _shared_texts(info)[0])


def descriptors_page(store: Store, info: LibraryInfo, search: str = "", order: str = "label order",
                     offset: int = 0, limit: int = 50) -> list[dict]:  # fmt: skip
    """One page of (class, descriptor, prompt) rows, each with how many classes share its text."""
    with Session(store.engine) as s:
        rows = s.execute(_descriptor_rows(info, search).order_by(*DESCRIPTOR_ORDERS[order]).offset(offset).limit(limit)).all()
        texts = {r.text for r in rows if r.text is not None}
        shared = dict(s.execute(
            select(DescriptorRow.text, func.count(func.distinct(DescriptorRow.class_id)))
            .where(DescriptorRow.library_id == info.id, DescriptorRow.text.in_(texts))
            .group_by(DescriptorRow.text)
        ).all()) if texts else {}  # fmt: skip
    return [{"class": r.name, "label": r.position, "descriptor": r.text, "prompt": r.prompt,
             "classes sharing it": shared.get(r.text, 0), "truncated": bool(r.truncated)} for r in rows]  # fmt: skip


def classes_page(store: Store, info: LibraryInfo, search: str = "", order: str = "label order",
                 offset: int = 0, limit: int = 50) -> list[dict]:  # fmt: skip
    """One page of classes with their descriptor counts and baseline prompts."""
    with Session(store.engine) as s:
        rows = s.execute(_class_rows(info, search).order_by(*CLASS_ORDERS[order]).offset(offset).limit(limit)).all()
    return [{"label": r.position, "class": r.name, "descriptors": r.n_descriptors,
             "baseline prompt": r.baseline_prompt} for r in rows]  # fmt: skip


def shared_descriptors_page(store: Store, info: LibraryInfo, offset: int = 0, limit: int = 50) -> list[dict]:
    """Descriptor texts several classes share (they cannot tell those classes apart), most shared first."""
    q, n = _shared_texts(info)
    with Session(store.engine) as s:
        rows = s.execute(q.order_by(n.desc(), DescriptorRow.text).offset(offset).limit(limit)).all()
        where: dict[str, list[str]] = {}
        if rows:
            for text, name in s.execute(
                select(DescriptorRow.text, ClassRow.name).join(ClassRow, ClassRow.id == DescriptorRow.class_id)
                .where(DescriptorRow.library_id == info.id, DescriptorRow.text.in_([r.text for r in rows]))
                .order_by(ClassRow.position)
            ):  # fmt: skip
                where.setdefault(text, []).append(name)
    return [{"descriptor": r.text, "classes": r.n,
             "in": ", ".join(where.get(r.text, [])[:8]) + (" ..." if r.n > 8 else "")} for r in rows]  # fmt: skip
