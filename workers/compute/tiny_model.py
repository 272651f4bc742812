"""A tiny random Llama with its own small BPE tokenizer: a stand-in for a real model in tests and CI."""

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = [BOS_TOKEN, EOS_TOKEN, PAD_TOKEN]
# SmolLM2-Instruct's template in the tiny vocabulary: each turn opens with BOS (its <|im_start|>) and its role, and
# closes with EOS (its <|im_end|>), so chat tests take the path SmolLM2's chats take.
CHAT_TEMPLATE = (
    "{% for message in messages %}" + BOS_TOKEN + "{{ message['role'] }}\n{{ message['content'] }}" + EOS_TOKEN
    + "\n{% endfor %}{% if add_generation_prompt %}" + BOS_TOKEN + "assistant\n{% endif %}"
)

# Shaped like SmolLM2 (grouped-query attention, gated MLP, RMSNorm, rotary) so tests take the same path.
TINY_LLAMA_SHAPE = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 256,
    "max_position_embeddings": 128,
}


def tiny_model_write(target_dir: Path, corpus: list[str], vocab_size: int = 512, seed: int = 0) -> Path:
    """Write an ordinary Hugging Face directory (weights, config, tokenizer) that loads like SmolLM2."""
    target_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(corpus, vocab_size)
    tokenizer.save_pretrained(target_dir)
    tiny_llama(tokenizer, seed).save_pretrained(target_dir)
    return target_dir


def tiny_tokenizer(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the corpus: any text encodes, and common words are single tokens."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    # trim_offsets=False keeps offsets faithful to the text, spaces included.
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN,
                                        pad_token=PAD_TOKEN)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_llama(tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_LLAMA_SHAPE,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
