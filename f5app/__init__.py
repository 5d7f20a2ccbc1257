"""f5app: fine-tune and run F5-TTS with Hydra configs, accelerate, and checkpoints you can trust."""

__version__ = "0.1.0"
