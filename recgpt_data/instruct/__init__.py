"""RecGPT's instruction-tuning pairs: the prompt templates, pair building from the instruction-pool
users' histories, and a planner for how many pairs each source and task yields."""
