"""Family adapters, by family name (the names the backends are registered under)."""

from vrp_bench.models.families.base import FamilyAdapter, VisionGrid
from vrp_bench.models.families.llava import LlavaAdapter
from vrp_bench.models.families.paligemma import PaliGemmaAdapter
from vrp_bench.models.families.qwen2_vl import Qwen2_5_VLAdapter, Qwen2VLAdapter

FAMILIES: dict[str, type[FamilyAdapter]] = {
    adapter.family: adapter for adapter in (LlavaAdapter, PaliGemmaAdapter, Qwen2VLAdapter, Qwen2_5_VLAdapter)
}

__all__ = ["FAMILIES", "FamilyAdapter", "VisionGrid"]
