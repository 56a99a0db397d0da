"""Response schemas, for the OpenAPI document and schemathesis. Routes answer plain JSON
(the explanation is ``Explanation.to_dict()``, as ``whyclip explain --json`` prints it), so
these models describe the answers and never reshape them; extra keys are allowed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class DescriptorScoreOut(Open):
    descriptor: str
    prompt: str
    similarity: float
    scaled: float
    weight: float
    fallback: bool


class ClassScoreOut(Open):
    class_: str = Field(alias="class")
    score: float
    probability: float
    rank: int
    descriptors: list[DescriptorScoreOut]
    baseline_score: float
    baseline_probability: float
    uncalibrated_probability: float | None = Field(
        None, description="The library's own probability, when `probability` is calibrated"
    )
    name_share: float | None = Field(
        None, description="Share of this score the class-name prompt alone gives, for this image"
    )
    description_share: float | None = Field(None, description="Share the descriptor content adds")


class BaselineOut(Open):
    class_: str = Field(alias="class")
    score: float
    probability: float


class ContrastRowOut(Open):
    descriptor: str
    a: float | None
    b: float | None
    contribution: float
    favours: str = Field(description="the class this descriptor pulls toward (a, b, or '-')")
    of: str = Field(description="the class whose descriptor this is (a, b, or 'both')")


class PairFeatureOut(Open):
    attribute: str
    a: str
    b: str
    prompt_a: str
    prompt_b: str
    similarity_a: float
    similarity_b: float
    favours: str


class PairDescriptorsOut(Open):
    a: str
    b: str
    features: list[PairFeatureOut]
    mean_a: float
    mean_b: float
    favours: str
    provenance: dict


class ContrastOut(Open):
    a: str
    b: str
    score_a: float
    score_b: float
    rows: list[ContrastRowOut]
    pair_descriptors: PairDescriptorsOut | None = None


class RetrievedOut(Open):
    class_: str = Field(alias="class")
    descriptor: str
    prompt: str
    similarity: float
    descriptor_id: int


class RetrievalOut(Open):
    exact: bool = Field(description="True when every descriptor was scored (the exact scan)")
    index: str = Field(description="The index and its calibrated knob, e.g. PQ256x4fs+rerank150")
    recall_at_10: float = Field(description="Recall@10 against exact search (1.0 when exact)")
    calibrated_on: str | None = Field(
        description="The image-like queries the recall was measured on, e.g. '240 eval images'"
    )
    note: str | None = Field(description="Why an approximate index answers exactly, or a low-recall warning")


class DescriptorMapOut(Open):
    class_: str = Field(alias="class")
    descriptor: str
    prompt: str
    score: float = Field(description="S of the prompt on this image, from the maps' own fp32 pass")
    remainder: float | None = Field(description="S outside every patch: with the patches it is `score`")
    patches: list[list[float]] | None = Field(description="The exact map: each patch's share of S, row by row")
    dense: list[list[float]] | None = Field(description="The dense (ClearCLIP) map, with dense=true")
    occlusion: list[list[float]] | None = Field(description="The fall in S per masked cell, with check=occlusion")
    agreement: float | None = Field(description="Spearman's rank correlation of the exact map with occlusion")


class ImageMapsOut(Open):
    method: str = Field(description="decomposition, or occlusion where the model's insides are not reachable")
    grid: list[int] | None = Field(description="The patch grid (rows, columns)")
    layers: int | None = Field(description="The attention layers the exact maps are made of")
    occlusion_grid: int | None = Field(description="The occlusion grid's side (None: not run)")
    dense: bool
    maps: list[DescriptorMapOut]
    note: str | None
    size: list[int] | None = Field(description="The model's input (height, width) in pixels, which the grids cover")


class ExplanationOut(Open):
    image: str
    library: str
    version: int
    encoder: str
    aggregate: str
    logit_scale: float
    n_classes: int
    predicted: str
    baseline_predicted: str | None
    classes: list[ClassScoreOut]
    baseline: list[BaselineOut]
    contrast: ContrastOut | None
    retrieved: list[RetrievedOut]
    calibration: dict | None = Field(None, description="The stored calibration the probabilities use (calibrated=true)")
    name_description: dict | None = Field(
        None, description="The per-image name/description fit, or a note why there is none"
    )
    retrieval: RetrievalOut | None = None
    maps: ImageMapsOut | None = Field(None, description="Where in the image, with maps=true (docs/explanations.md)")


class ExplainOut(Open):
    explanations: list[ExplanationOut] = Field(
        description="One per image, in upload order: the objects of `whyclip explain --json`"
    )
    seconds: dict[str, float] = Field(
        description="Where the time went (decode, encode, explain): not part of the explanation"
    )


class IndexOut(Open):
    factory: str
    params: dict
    exact: bool = Field(description="True when the index is an exact scan")
    recall_at_10: float = Field(
        description="Recall@10 against exact search, measured on image-like queries (eval images, else a proxy)"
    )
    calibrated_on: str | None = Field(default=None, description="Those queries, e.g. '240 eval images'")


class RetrieveOut(Open):
    library: str
    version: int
    query: dict
    retrieved: list[RetrievedOut]
    index: IndexOut
    note: str


class LibraryOut(Open):
    id: int
    name: str
    version: int
    created_at: str
    encoder_id: str
    encoder_name: str
    dim: int
    logit_scale: float
    template: str
    baseline_template: str
    aggregate: str
    n_classes: int
    n_descriptors: int
    n_prompts: int
    n_empty_classes: int
    n_pairs: int = Field(
        0, description="Class pairs with contrastive pair descriptors (FuDD), kept apart from the classes' own"
    )
    index_factory: str
    recall_at_10: float
    retrieval: RetrievalOut | None = None


class LibraryVersionsOut(Open):
    name: str
    versions: list[LibraryOut] = Field(description="Every ready version, newest first")


class PageOut(Open):
    library: str
    version: int
    total: int
    offset: int
    limit: int
    items: list[dict]


class JobOut(Open):
    id: str
    kind: str
    library: str
    state: str = Field(description="queued, running, done, failed or interrupted")
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: dict[str, int]
    result: dict | None
    error: str | None


class DeletedOut(Open):
    library: str
    deleted_versions: list[int]


class HealthOut(Open):
    status: str
    model_loaded: bool | None = None
    store: str | None = None
