"""Loading: a model file and what it takes, read safely.

- model: ModelHandle and loading every source format; model_file: what a path must be before anything heavy loads.
- safe_load: what loading a ``.pt2`` would execute; archive: zip archives read one way only.
- spec: the model's named, typed inputs and outputs; describe: their batch axes and state pairs, declared or inferred.
- capture: torch.export capture for PT2E.
"""
