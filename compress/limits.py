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
# compress.safety.yamlsafe and compress.safety.jsonsafe refuse anything beyond these before any step walks the values.
MAX_DOCUMENT_DEPTH = 200     # nested lists/mappings (a report nests about 8 deep)
MAX_YAML_VALUES = 100_000    # values a YAML document stands for once its aliases are expanded

# --- numeric command-line options (compress.commands._options.OPTION_BOUNDS) ---------------------------------------
MAX_SECONDS = 86_400         # a timing duration or a target's per-call timeout: one day
MAX_SEED = 2**32 - 1         # numpy's seeds are 32-bit

# Archives (compress/loading/archive.py, compress/loading/safe_load.py, compress/data/registry.py): bounds checked on declared sizes
# before anything is inflated; readers stop at the declared size, so a size that lies costs no more.
MAX_INFLATE_RATIO = 200            # a deflated zip entry above MIN_BOMB_BYTES may grow at most this much (deflate: ~1000x)
MIN_BOMB_BYTES = 64 << 20          # smaller entries are not judged by their ratio
MAX_CHECKED_ENTRY_BYTES = 256 << 20  # an entry the .pt2 safety check reads whole (program JSON, configs, sample inputs)
MAX_DATA_BYTES = 2 << 30           # the arrays of one .npz, inflated (held in memory, copied while split)
MAX_EXPRESSION_DIGITS = 4_300      # a number a .pt2 shape expression may reach (Python's own int-to-text bound)
