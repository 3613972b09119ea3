"""Fidelities and what to do with them: ladders, split depths, rank-correlation studies and their tasks,
successive-halving replays, and rungs placed on GPUs."""
