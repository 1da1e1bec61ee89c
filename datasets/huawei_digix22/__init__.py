"""Huawei DIGIX 2022 CTR (TFDS ``huawei_digix22``), see ``huawei_digix22_dataset_builder``."""

from tfdebias.datasets.huawei_digix22.huawei_digix22_dataset_builder import Builder, DigixConfig  # noqa: F401
