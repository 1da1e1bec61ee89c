"""TikTok ICME 2019 track 2 (TFDS ``tiktok_icme19``), see ``tiktok_icme19_dataset_builder``."""

from tfdebias.datasets.tiktok_icme19.tiktok_icme19_dataset_builder import Builder, TikTokConfig  # noqa: F401
