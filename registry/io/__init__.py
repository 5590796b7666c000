"""Checkpoint I/O: a strict safetensors reader (pread, no mmap), a deterministic sharded writer,
weights-only `.bin` loading, and shard-size parsing."""

from registry.io.checkpoint import Checkpoint, open_checkpoint
from registry.io.safetensors import SafetensorsFile, TensorInfo, read_header
from registry.io.writer import ShardedWriter, parse_size

__all__ = [
    "Checkpoint",
    "SafetensorsFile",
    "ShardedWriter",
    "TensorInfo",
    "open_checkpoint",
    "parse_size",
    "read_header",
]
