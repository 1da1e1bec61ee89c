"""Task pipelines: TFDS splits to model batches, plus samplers and splitters."""

from tfdebias.data.pipeline import (  # noqa: F401
    available,
    data_seeds,
    evidence_data,
    default_data_dir,
    features_only,
    get_builder,
    is_simulator,
    load,
    load_schema,
    make_dataset,
    num_rows,
    prepare,
    read_split,
)
