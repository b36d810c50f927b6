"""The `semivl-edge` command-line tools beside the DVC stages (model summary, benchmarks). No stage imports
them, so editing a benchmark reruns nothing."""
