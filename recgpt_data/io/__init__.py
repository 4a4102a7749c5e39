"""Input and output at the edges: compressed streams, line batches, rejects, atomic writes."""
