"""The tiny-model lab: tokenizer, tiny Llama checkpoints, CT/SFT training for tests and the demo."""
