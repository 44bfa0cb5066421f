"""The benchmark suite: every seed model through the tools users would otherwise pick, and through compress."""
