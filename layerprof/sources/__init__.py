"""Where models come from: a MODEL string to a model, its synthetic workload, and its split into layers."""
