"""KuaiRec 2.0 (TFDS ``kuairec``), see ``kuairec_dataset_builder``."""

from tfdebias.datasets.kuairec.kuairec_dataset_builder import Builder, KuaiRecConfig  # noqa: F401
