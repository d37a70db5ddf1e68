"""WebDataset shards: the sample format, the writer and its index, verification and statistics."""
