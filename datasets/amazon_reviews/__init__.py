"""Amazon reviews 2014/2018 (TFDS ``amazon_reviews``), see ``amazon_reviews_dataset_builder``."""

from tfdebias.datasets.amazon_reviews.amazon_reviews_dataset_builder import AmazonConfig, Builder  # noqa: F401
