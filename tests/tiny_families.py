"""Tiny random-weight models of each family tuneline supports, built from a config and saved like a hub checkpoint
(weights + tokenizer or image processor), so the tests run every family's real code path offline in seconds.

Text: encoders (BERT, RoBERTa, DeBERTa-v2, DistilBERT, ModernBERT) share a small WordPiece vocabulary; decoders
(GPT-2, Llama, Qwen2) get a byte-level BPE tokenizer with an end-of-text token and, like GPT-2's, no pad token.
Images: ResNet, ConvNeXt, ViT, Swin and EfficientNet at 32 pixels, each with its own kind of image processor.
"""
from __future__ import annotations

from pathlib import Path

ENCODERS = ("bert", "roberta", "deberta-v2", "distilbert", "modernbert")
DECODERS = ("gpt2", "llama", "qwen2")
TEXT_FAMILIES = ENCODERS + DECODERS
IMAGE_FAMILIES = ("resnet", "convnext", "vit", "swin", "efficientnet")
IMAGE_SIDE = 32
WIDTH, LAYERS, HEADS, FFN = 32, 2, 2, 64


def wordpiece_tokenizer(out: Path, texts: list[str]):
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    from tests.conftest import tiny_vocab

    (out / "vocab.txt").write_text("\n".join(tiny_vocab(texts)) + "\n", encoding="utf-8")
    backend = BertWordPieceTokenizer(str(out / "vocab.txt"), lowercase=True)
    return BertTokenizerFast(tokenizer_object=backend._tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                             cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", do_lower_case=True)


def bpe_tokenizer(family: str, texts: list[str]):
    """A byte-level BPE trained on the texts; an end-of-text token (and begin for Llama), no pad token."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast, PreTrainedTokenizerFast

    eos = "</s>" if family == "llama" else "<|endoftext|>"
    specials = ["<s>", eos, "<unk>"] if family == "llama" else [eos]
    backend = ByteLevelBPETokenizer()
    backend.train_from_iterator(texts, vocab_size=600, min_frequency=2, special_tokens=specials, show_progress=False)
    if family == "gpt2":
        return GPT2TokenizerFast(tokenizer_object=backend._tokenizer, eos_token=eos, bos_token=eos, unk_token=eos)
    extra = {"bos_token": "<s>", "unk_token": "<unk>"} if family == "llama" else {}
    return PreTrainedTokenizerFast(tokenizer_object=backend._tokenizer, eos_token=eos, **extra)


def text_config(family: str, tokenizer):
    import transformers as t

    vocab, pad = len(tokenizer), tokenizer.pad_token_id
    common = dict(vocab_size=vocab, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
                  hidden_size=WIDTH, max_position_embeddings=128)
    if family == "bert":
        return t.BertConfig(**common, pad_token_id=pad)
    if family == "roberta":
        return t.RobertaConfig(**common, pad_token_id=pad, bos_token_id=tokenizer.cls_token_id,
                               eos_token_id=tokenizer.sep_token_id)
    if family == "deberta-v2":
        return t.DebertaV2Config(**common, pad_token_id=pad, relative_attention=True, position_buckets=16,
                                 pos_att_type=["p2c", "c2p"])
    if family == "distilbert":
        return t.DistilBertConfig(vocab_size=vocab, dim=WIDTH, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN,
                                  max_position_embeddings=128, pad_token_id=pad)
    if family == "modernbert":
        return t.ModernBertConfig(**common, pad_token_id=pad, cls_token_id=tokenizer.cls_token_id,
                                  sep_token_id=tokenizer.sep_token_id, global_attn_every_n_layers=2,
                                  local_attention=16)
    eos = tokenizer.eos_token_id
    if family == "gpt2":
        return t.GPT2Config(vocab_size=vocab, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS, n_inner=FFN,
                            n_positions=128, bos_token_id=eos, eos_token_id=eos)
    if family == "llama":
        return t.LlamaConfig(**common, num_key_value_heads=1, bos_token_id=tokenizer.bos_token_id, eos_token_id=eos,
                             pad_token_id=None)
    if family == "qwen2":
        return t.Qwen2Config(**common, num_key_value_heads=1, eos_token_id=eos, bos_token_id=eos, pad_token_id=None)
    raise ValueError(family)


def build_text_model(family: str, out: Path, texts: list[str]) -> Path:
    """A tiny pre-trained-like body (base model, no head) of `family` with its tokenizer, saved to `out`."""
    import torch
    from transformers import AutoModel

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = wordpiece_tokenizer(out, texts) if family in ENCODERS else bpe_tokenizer(family, texts)
    AutoModel.from_config(text_config(family, tokenizer)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def image_parts(family: str):
    import transformers as t

    side = {"height": IMAGE_SIDE, "width": IMAGE_SIDE}
    if family == "resnet":
        return (t.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"),
                t.ConvNextImageProcessor(size={"shortest_edge": IMAGE_SIDE}, crop_pct=0.875))
    if family == "convnext":
        return (t.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, patch_size=2),
                t.ConvNextImageProcessor(size={"shortest_edge": IMAGE_SIDE}, crop_pct=0.875))
    if family == "vit":
        return (t.ViTConfig(image_size=IMAGE_SIDE, patch_size=8, hidden_size=WIDTH, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, intermediate_size=FFN),
                t.ViTImageProcessor(size=side))
    if family == "swin":
        return (t.SwinConfig(image_size=IMAGE_SIDE, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                             window_size=4),
                t.ViTImageProcessor(size=side, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]))
    if family == "efficientnet":
        return (t.EfficientNetConfig(image_size=IMAGE_SIDE, width_coefficient=0.25, depth_coefficient=0.25,
                                     hidden_dim=320, num_channels=3),
                t.EfficientNetImageProcessor(size=side))
    raise ValueError(family)


def build_image_model(family: str, out: Path) -> Path:
    """A tiny body of `family` at 32 pixels with its own image processor, saved to `out`."""
    import torch
    from transformers import AutoModelForImageClassification

    torch.manual_seed(0)
    config, processor = image_parts(family)
    AutoModelForImageClassification.from_config(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out
