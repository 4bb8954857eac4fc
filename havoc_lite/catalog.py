"""What the memory planner and the bench know about the world: GPUs (memory, bf16 peak) and the
shapes of open pretrained bases."""
from __future__ import annotations

from .config import ModelConfig

GPUS: dict[str, float] = {  # name -> capacity in GiB
    "t4-16": 16, "v100-16": 16, "rtx3090-24": 24, "rtx4090-24": 24, "l4-24": 24, "a10-24": 24,
    "v100-32": 32, "a100-40": 40, "l40s-48": 48, "a100-80": 80, "h100-80": 80, "h200-141": 141,
}
# Dense bf16 tensor-core peak, TFLOP/s, from the vendors' data sheets (no sparsity).
PEAK_BF16_TFLOPS: dict[str, float] = {
    "t4-16": 65, "v100-16": 125, "v100-32": 125, "rtx3090-24": 71, "rtx4090-24": 165, "l4-24": 121,
    "a10-24": 125, "a100-40": 312, "l40s-48": 362, "a100-80": 312, "h100-80": 989, "h200-141": 989,
}

# Shapes of open pretrained bases, from their published config.json files on the Hugging Face hub
# (HuggingFaceTB/SmolLM2-*, Qwen/Qwen2.5-*, meta-llama/Llama-3.2-*), for planning LoRA runs.
PRETRAINED: dict[str, ModelConfig] = {
    "smollm2-135m": ModelConfig(vocab_size=49152, d_model=576, n_layers=30, n_heads=9, num_kv_heads=3,
                                ffn_hidden_size=1536, max_seq_len=8192, rope_theta=100000.0),
    "smollm2-360m": ModelConfig(vocab_size=49152, d_model=960, n_layers=32, n_heads=15, num_kv_heads=5,
                                ffn_hidden_size=2560, max_seq_len=8192, rope_theta=100000.0),
    "smollm2-1.7b": ModelConfig(vocab_size=49152, d_model=2048, n_layers=24, n_heads=32, num_kv_heads=32,
                                ffn_hidden_size=8192, max_seq_len=8192, rope_theta=130000.0),
    "qwen2.5-0.5b": ModelConfig(vocab_size=151936, d_model=896, n_layers=24, n_heads=14, num_kv_heads=2,
                                ffn_hidden_size=4864, max_seq_len=32768, rope_theta=1000000.0,
                                attention_bias=True),
    "qwen2.5-1.5b": ModelConfig(vocab_size=151936, d_model=1536, n_layers=28, n_heads=12, num_kv_heads=2,
                                ffn_hidden_size=8960, max_seq_len=32768, rope_theta=1000000.0,
                                attention_bias=True),
    "llama-3.2-1b": ModelConfig(vocab_size=128256, d_model=2048, n_layers=16, n_heads=32, num_kv_heads=8,
                                head_dim=64, ffn_hidden_size=8192, max_seq_len=131072, rope_theta=500000.0),
    "llama-3.2-3b": ModelConfig(vocab_size=128256, d_model=3072, n_layers=28, n_heads=24, num_kv_heads=8,
                                head_dim=128, ffn_hidden_size=8192, max_seq_len=131072, rope_theta=500000.0),
}
