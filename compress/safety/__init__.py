"""Safety and I/O: nothing half-written, nothing unbounded read, no noise on stdout.

- io: atomic, durable writes; jsonsafe, yamlsafe: bounded, standard reads; rundir: a locked run directory.
- quiet: third-party noise off the terminal; lifeline: helpers that end with their parent;
  timing_lock: one timing at a time per machine.
"""
