"""The benchmark suite: every seed model through the tools users would otherwise pick, and through compress."""
import os

# The suite times several runtimes interleaved on shared cores: idle OpenMP threads (torch) must sleep, not spin, or
# they starve whichever runtime runs next (onnxruntime's own spinning is turned off per session: bench.baselines).
# Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
