"""Training: strategies, the engine, run directories and the distributed loop."""

from tfdebias.training.engine import (  # noqa: F401
    TrainConfig,
    TrainResult,
    build_model,
    compile_model,
    evaluate_run,
    fit,
    load_run,
    train,
)
from tfdebias.training.run_dir import RunDir, read_json  # noqa: F401
from tfdebias.training.strategy import get_strategy, split_cpu  # noqa: F401
from tfdebias.training.threads import configure_cpu_threads  # noqa: F401
