"""The onnxruntime SessionOptions a config is run with (graph optimization level, switched-off
fusions, threads): part of what is searched, and exportable with the model. Kept apart from
`search.config` (which re-exports it) so the config module stays about the config."""

from __future__ import annotations


def make_session_options(
    graph_optimization: str = "all", disabled_fusions: tuple[str, ...] = (), threads: int = 1
):
    """SessionOptions that carry the searched options; exportable with the model."""
    import onnxruntime as ort

    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[graph_optimization]
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if threads > 1:  # idle pool threads must not spin into the single-threaded timing after
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    if disabled_fusions:
        options.add_session_config_entry(
            "optimization.disable_specified_optimizers", ",".join(disabled_fusions)
        )
    return options
