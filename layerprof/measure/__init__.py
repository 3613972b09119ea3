"""Measured cells: the sweep and its cell scaffold, the optimizer and mixed precision a step trains with, the
instruments (timers, tracker, FLOPs), timed rounds, NVML, the device in use, and sweeps run as Ray tasks."""
