"""Fidelities and what to do with them: ladders, split depths, rank-correlation studies with their grids and
tasks, successive-halving replays, and rungs placed on GPUs."""
