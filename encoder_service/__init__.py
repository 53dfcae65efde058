"""The GPU tier: CLIP over gRPC with dynamic batching. Only this package imports torch and clip."""
