"""The search tier: owns the Milvus collections and answers through the encoder. Never imports torch."""
