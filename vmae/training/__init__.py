"""Training half: shard stream, transforms, models, masking, losses, engines and checkpoints."""
