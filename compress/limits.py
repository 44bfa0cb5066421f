"""Upper bounds of the knobs (epochs, sample counts, timing runs, ...): a typo such as ``epochs: 1000000000000`` is
bad input (exit 2), never a run that goes on until someone kills it. Each config field's description names its bound.

Example:
    >>> PruneConfig(finetune_epochs=MAX_EPOCHS + 1)
    ValidationError: finetune_epochs: Input should be less than or equal to 10000
"""
MAX_EPOCHS = 10_000
MAX_SAMPLES = 1_000_000      # calibration / evaluation samples
MAX_RUNS = 100_000           # timed runs and warm-up runs of a benchmark
MAX_BATCH = 65_536           # training and timing batch sizes
MAX_THREADS = 1_024
MAX_TRIALS = 100_000
MAX_WORKERS = 1_024
MAX_LAYERS = 10_000          # layers kept in float by fallback or search

# --- documents read (YAML and JSON: recipes, report.json, stage.json, manifests, --arch-kwargs values) -------------
# compress.yamlsafe and compress.jsonsafe refuse anything beyond these before any step walks the values.
MAX_DOCUMENT_DEPTH = 200     # nested lists/mappings (a report nests about 8 deep)
MAX_YAML_VALUES = 100_000    # values a YAML document stands for once its aliases are expanded

# --- numeric command-line options (compress.commands._options.OPTION_BOUNDS) ---------------------------------------
MAX_SECONDS = 86_400         # a timing duration or a target's per-call timeout: one day
MAX_SEED = 2**32 - 1         # numpy's seeds are 32-bit
