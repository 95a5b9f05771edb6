"""FL logic: messages, the federation, strategies, models, data, training, the client loop."""
