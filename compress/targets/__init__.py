"""Where a runner runs: local CPU, CUDA, ssh, adb, qemu-arm64; plus the self-contained device runner."""
