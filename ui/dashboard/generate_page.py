"""Generate page: class names -> an LLM's descriptors (any OpenAI-compatible server), the
cleaning report, an editable table, then an ingest. The same job as ``whyclip generate``:
answers go through the store's answer cache, so asking again sends no request. The API key
is read from an environment variable by name; the page never shows or stores it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from whyclip import ingest
from whyclip.ingest.generate.cleaning import CleanSettings
from whyclip.ingest.generate.generation import GenerateSettings, generate_library
from whyclip.ingest.generate.llm_client import DEFAULT_BASE_URL, ChatClient, resolve_api_key
from whyclip.ingest.generate.llm_prompts import BUILTIN, load_prompt
from whyclip.store import Store, WhyclipError, check_name
from whyclip.ui.dashboard import cached

RESULT = "generate_result"
s = cached.settings()

st.title("Generate descriptors")
st.caption(
    "Each class's descriptors come from an LLM on any OpenAI-compatible chat-completions server "
    "(Ollama, vLLM, llama.cpp's server, or a hosted API), are cleaned, reviewed here, then ingested."
)

left, right = st.columns(2)
pasted = left.text_area(
    "Class names, one a line", key="generate_names", height=180, placeholder="tree frog\ntailed frog"
)
upload = left.file_uploader(
    "... or a file (.txt one a line, .json list, .csv first column)", type=["txt", "json", "csv"], key="generate_upload"
)
base_url = right.text_input(
    "Server (base URL)", value=os.environ.get("OPENAI_BASE_URL", DEFAULT_BASE_URL), key="generate_url"
)
model = right.text_input("Model", value="gpt-4o-mini", key="generate_model")
key_env = right.text_input(
    "Environment variable holding the API key",
    value="OPENAI_API_KEY",
    key="generate_key_env",
    help="Local servers accept any key; none is needed for localhost.",
)
prompt_name = right.selectbox("Prompt", list(BUILTIN), key="generate_prompt")
temperature = right.slider("Temperature", 0.0, 2.0, 0.0, 0.1, key="generate_temperature")


def class_names() -> list[str]:
    """The pasted names, else the uploaded file's (read by the same reader as the CLI)."""
    names = [line.strip() for line in pasted.splitlines() if line.strip()]
    if names or upload is None:
        return list(dict.fromkeys(names))
    from whyclip.ingest.generate.classes import read_classes

    suffix = Path(upload.name).suffix.lower() or ".txt"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"classes{suffix}"
        path.write_bytes(upload.getvalue())
        return read_classes(path).names


@st.cache_resource(show_spinner=False)
def writable_store(home: str | None, db: str | None) -> Store:
    return Store.open(home, db, create=True)  # the answer cache lives in the store


if st.button("Generate", type="primary", key="generate_go"):
    try:
        names = class_names()
        if not names:
            st.info("Paste some class names, or upload a file of them.")
            st.stop()
        from whyclip.ingest.generate.classes import ClassList

        client = ChatClient(base_url, model, resolve_api_key(key_env, base_url), timeout=60.0)
        settings = GenerateSettings(model=model, prompt=load_prompt(prompt_name), temperature=temperature)
        bar = st.progress(0.0, text="asking the LLM")

        def progress(done: int, total: int) -> None:
            bar.progress(min(1.0, done / max(total, 1)), text=f"asking the LLM: {done} of {total} answers")

        generated = generate_library(
            writable_store(s.home, s.db), ClassList(names), client, settings, CleanSettings(), progress=progress
        )
        bar.progress(1.0, text=f"{generated.n_sent} requests sent, {generated.n_cached} answers from the cache")
        st.session_state[RESULT] = generated
    except WhyclipError as exc:
        st.error(str(exc))
        st.stop()

result = st.session_state.get(RESULT)
if result is None:
    st.stop()

report = result.report.to_json()
st.subheader("Cleaning report")
findings = pd.DataFrame(report["findings"], columns=["class_name", "descriptor", "step", "action", "reason"])
counts = findings.groupby(["step", "action"]).size().rename("lines").reset_index() if len(findings) else findings
cols = st.columns(3)
cols[0].metric("classes", len(result.classes))
cols[1].metric("descriptors kept", sum(len(lines) for _, lines in result.classes))
cols[2].metric("classes left empty", len(report.get("empty_classes", [])))
if len(findings):
    st.dataframe(counts, hide_index=True)
    with st.expander(f"every line dropped or flagged ({len(findings)})"):
        st.dataframe(findings.astype(str), hide_index=True)
else:
    st.success("Nothing was dropped or flagged.")
if report.get("empty_classes"):
    st.warning(
        "No descriptors for: "
        + ", ".join(f"{e['class']} ({e['reason']})" for e in report["empty_classes"])
        + ". They fall back to their class-name prompt unless you add some below."
    )

st.subheader("Review and edit")
rows = [{"class": c, "descriptor": d} for c, lines in result.classes for d in lines]
rows += [{"class": c, "descriptor": ""} for c, lines in result.classes if not lines]
edited = st.data_editor(
    pd.DataFrame(rows, columns=["class", "descriptor"]),
    num_rows="dynamic",
    hide_index=True,
    key="generate_table",
    width="stretch",
)

name = st.text_input("Library name", key="generate_library_name")
ingest_model = st.text_input("CLIP model for the ingest", value=s.model or "clip-ViT-B-32", key="generate_clip")
if st.button("Ingest", key="generate_ingest"):
    if not name.strip():
        st.info("Give the library a name first.")
        st.stop()
    try:
        check_name(name)  # the store's rule, as the command line and the service apply it
    except WhyclipError as exc:
        st.error(str(exc))
        st.stop()
    library: dict[str, list[str]] = {}
    for cls, desc in zip(edited["class"].fillna(""), edited["descriptor"].fillna(""), strict=True):
        cls, desc = str(cls).strip(), str(desc).strip()
        if cls:
            library.setdefault(cls, [])
            if desc:
                library[cls].append(desc)
    try:
        store = writable_store(s.home, s.db)
        with st.spinner("Embedding the prompts ..."):
            report_ = ingest.ingest_library(store, library, name, cached.encoder(ingest_model))
        info = report_.info
        st.success(
            f"library {info.name} v{info.version}: {info.n_classes} classes, {info.n_descriptors} descriptors "
            f"({report_.n_embedded} embedded, {report_.n_reused} from the cache). Open it on the Explain page."
        )
        cached.clear_store_caches()
    except WhyclipError as exc:
        st.error(str(exc))
