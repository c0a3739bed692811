"""Writing, reading, hashing and verifying vrp_shapes splits as parquet files.

A split directory holds ``{size}px/{question_set}-{split}.parquet`` for every question set and
image size, plus ``MANIFEST.json`` recording the generator parameters and a content hash per file.
Content hashes cover decoded pixels, not PNG bytes, so they do not depend on the PNG encoder.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vrp_bench.api.files import atomic_path
from vrp_bench.datasets.vrp_shapes import QUESTION_SETS, generate_docs

GENERATOR = "vrp_shapes"
GENERATOR_VERSION = 1
MANIFEST_NAME = "MANIFEST.json"
ROW_GROUP_SIZE = 100

FEATURES = datasets.Features(
    {
        "doc_id": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "question_type": datasets.Value("string"),
        "negative_sampling": datasets.Value("string"),
        "image": datasets.Image(),
        "image_size": datasets.Value("int32"),
        "boxes": [[datasets.Value("int32")]],
        "objects": [
            {
                "shape": datasets.Value("string"),
                "color": datasets.Value("string"),
                "box": [datasets.Value("int32")],
            }
        ],
    }
)
"""Parquet schema of a vrp_shapes doc (``[x]`` = list of x, valid in every ``datasets`` >= 2.19);
``image`` is stored as PNG bytes and decodes to PIL."""


def content_hash(docs: Iterable[dict]) -> str:
    """Hash "sha256:<hex>" of the docs in order: canonical JSON of each doc's non-image fields, then
    its image's mode, size and raw pixel bytes."""
    digest = hashlib.sha256()
    for doc in docs:
        fields = {key: value for key, value in doc.items() if key != "image"}
        digest.update(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())
        image = doc["image"]
        digest.update(f"\n{image.mode} {image.width} {image.height}\n".encode())
        digest.update(image.tobytes())
    return f"sha256:{digest.hexdigest()}"


def write_parquet(docs: list[dict], path: str | Path) -> None:
    """Write docs to a parquet file (atomically) that ``datasets.load_dataset("parquet")`` decodes."""
    path = Path(path)
    table = pa.Table.from_pylist([FEATURES.encode_example(doc) for doc in docs], schema=FEATURES.arrow_schema)
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary, row_group_size=ROW_GROUP_SIZE)


def read_parquet_docs(path: str | Path) -> list[dict]:
    """The docs of a parquet file written by ``write_parquet``, images decoded to PIL."""
    docs = pq.read_table(path).to_pylist()
    for doc in docs:
        doc["image"] = _decode_image(doc["image"]["bytes"])
    return docs


def write_split(
    output_dir: str | Path,
    split: str = "test",
    n_per_set: int = 300,
    seed: int = 0,
    image_sizes: tuple[int, ...] = (64, 336),
) -> dict:
    """Write every question set at every image size plus MANIFEST.json; return the manifest."""
    output_dir = Path(output_dir)
    files = {}
    for relative_path, (question_set, image_size) in split_files(split, image_sizes).items():
        docs = generate_docs(question_set, split, n_per_set, seed, image_size)
        write_parquet(docs, output_dir / relative_path)
        files[relative_path] = {"rows": len(docs), "content_hash": content_hash(docs)}
    manifest = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "split": split,
        "seed": seed,
        "n_per_set": n_per_set,
        "image_sizes": list(image_sizes),
        "files": files,
    }
    with atomic_path(output_dir / MANIFEST_NAME) as temporary:
        temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def verify_split(data_dir: str | Path) -> list[str]:
    """Mismatches between a split directory, its manifest and a fresh regeneration ([] = reproduces).

    Checks the generator name and version, the file list, and for every file that the regenerated
    docs and the shipped parquet both have the manifest's row count and content hash.
    """
    data_dir = Path(data_dir)
    manifest = json.loads((data_dir / MANIFEST_NAME).read_text())
    problems = []
    if (manifest["generator"], manifest["generator_version"]) != (GENERATOR, GENERATOR_VERSION):
        problems.append(
            f"manifest is from {manifest['generator']} v{manifest['generator_version']}, "
            f"this code is {GENERATOR} v{GENERATOR_VERSION}"
        )
    split, n_per_set, seed = manifest["split"], manifest["n_per_set"], manifest["seed"]
    expected_files = split_files(split, tuple(manifest["image_sizes"]))
    for relative_path in sorted(set(manifest["files"]) - set(expected_files)):
        problems.append(f"{relative_path}: listed in the manifest but not produced by the generator")
    for relative_path, (question_set, image_size) in expected_files.items():
        entry = manifest["files"].get(relative_path)
        if entry is None:
            problems.append(f"{relative_path}: produced by the generator but missing from the manifest")
            continue
        regenerated = generate_docs(question_set, split, n_per_set, seed, image_size)
        problems += _compare(f"{relative_path} (regenerated)", regenerated, entry)
        shipped_path = data_dir / relative_path
        if not shipped_path.is_file():
            problems.append(f"{relative_path}: file missing")
            continue
        problems += _compare(f"{relative_path} (shipped)", read_parquet_docs(shipped_path), entry)
    return problems


def split_files(split: str, image_sizes: tuple[int, ...]) -> dict[str, tuple[str, int]]:
    """Relative parquet path -> (question set, image size) for every file of a split directory."""
    return {
        f"{image_size}px/{question_set}-{split}.parquet": (question_set, image_size)
        for image_size in image_sizes
        for question_set in QUESTION_SETS
    }


def _compare(label: str, docs: list[dict], entry: dict) -> list[str]:
    """Descriptions of how ``docs`` differ from a manifest entry's row count and content hash."""
    problems = []
    if len(docs) != entry["rows"]:
        problems.append(f"{label}: {len(docs)} rows, manifest says {entry['rows']}")
    actual = content_hash(docs)
    if actual != entry["content_hash"]:
        problems.append(f"{label}: content hash {actual}, manifest says {entry['content_hash']}")
    return problems


def _decode_image(png_bytes: bytes) -> Image.Image:
    """A fully loaded PIL image from encoded bytes."""
    image = Image.open(io.BytesIO(png_bytes))
    image.load()
    return image
