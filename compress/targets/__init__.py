"""Where a runner runs: local CPU, CUDA, ssh, adb, qemu-arm64; plus the self-contained device runner.

Each target module registers its class (``compress.targets.base.register_target``); importing them here makes the
built-in targets known, in this order. A new target is one module plus its ``@register_target(...)`` line (README,
"A target"). shipping: inputs and outputs as bytes for a machine that shares no filesystem with the driver.
"""
from compress.targets import local, cuda, ssh, adb, qemu  # noqa: F401,I001  (each registers its target)
