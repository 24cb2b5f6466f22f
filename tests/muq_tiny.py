"""A tiny random-init instance of the real ``muq.MuQMuLan`` (test environment only).

Three directories, as on the hub: a MuQ audio tower, an XLM-RoBERTa text tower with its
tokenizer, and the MuQ-MuLan checkpoint whose config.json names the two towers. Sizes are the
smallest muq accepts (its mel front end always makes 128 bins; label_rate is 25 or 50).
"""

from __future__ import annotations

import importlib
import json
import string
import sys
import types
from pathlib import Path

import torch

SR = 24000
MUQ = dict(label_rate=25, num_codebooks=1, codebook_dim=16, codebook_size=16, features=["melspec_2048"],
           hop_length=240, n_mels=128, conv_dim=8, encoder_dim=32, encoder_depth=2, is_flash=False,
           stat={"melspec_2048_mean": 6.768444971712967, "melspec_2048_std": 18.417922652295623})
CONFORMER = dict(num_attention_heads=2, intermediate_size=64, position_embeddings_type="rotary",
                 conv_depthwise_kernel_size=3, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                 hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                 conformer_conv_dropout=0.0, final_dropout=0.0, layerdrop=0.0)
XLMR = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=130, type_vocab_size=1, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)
TOWER = dict(dim=32, tf_depth=2, heads=2, dim_head=16, attn_dropout=0.0, ff_dropout=0.0, ff_mult=2)


def import_muq():
    """Import muq where torchvision cannot load (a CPU torch with PyPI's CUDA torchvision).

    x_clip, which muq's text tower imports, imports torchvision at module level but uses it
    only in code muq never calls; a stand-in module is present just for that import.
    """
    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in [n for n in sys.modules if n.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        stub = types.ModuleType("torchvision")
        stub.transforms = types.ModuleType("torchvision.transforms")
        sys.modules.update({"torchvision": stub, "torchvision.transforms": stub.transforms})
        try:
            importlib.import_module("x_clip.tokenizer")
        finally:  # transformers probes find_spec("torchvision"); a stub without a spec breaks it
            del sys.modules["torchvision"], sys.modules["torchvision.transforms"]
    return importlib.import_module("muq")


def _audio_tower(path: Path, seed: int) -> None:
    from transformers import Wav2Vec2ConformerConfig

    muq = import_muq()
    torch.manual_seed(seed)
    conformer = json.loads(Wav2Vec2ConformerConfig(**CONFORMER).to_json_string(use_diff=False))
    model = muq.MuQ(muq.MuQConfig(**MUQ, w2v2_config=conformer))
    torch.manual_seed(seed + 1)  # MuQ's quantizer reseeds the global RNG while it is built
    for p in model.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.05)
    model.eval().save_pretrained(path)


def _text_tower(path: Path, seed: int) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    chars = list(string.ascii_letters + string.digits + string.punctuation)
    pieces = ["\u2581"] + chars + ["\u2581" + c for c in chars]
    vocab = ([(t, 0.0) for t in ("<s>", "<pad>", "</s>", "<unk>")]
             + [(p, -float(len(p))) for p in pieces] + [("<mask>", 0.0)])
    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    XLMRobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                            cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                            model_max_length=128).save_pretrained(path)
    torch.manual_seed(seed)
    cfg = XLMRobertaConfig(vocab_size=len(vocab), pad_token_id=1, bos_token_id=0, eos_token_id=2, **XLMR)
    XLMRobertaModel(cfg).eval().save_pretrained(path)


def build_tiny_muq_mulan(root: Path, seed: int = 0) -> dict[str, Path]:
    """root/{MuQ-tiny, xlm-roberta-tiny, MuQ-MuLan-tiny}; the towers' names satisfy muq's rule."""
    muq = import_muq()
    dirs = {"audio_model": root / "MuQ-tiny", "text_model": root / "xlm-roberta-tiny",
            "model": root / "MuQ-MuLan-tiny"}
    _audio_tower(dirs["audio_model"], seed)
    _text_tower(dirs["text_model"], seed)
    config = dict(
        mulan=dict(sr=SR, clip_secs=10, dim_latent=512, decoupled_contrastive_learning=True,
                   hierarchical_contrastive_loss=False, hierarchical_contrastive_loss_layers=None,
                   sigmoid_contrastive_loss=False, rank_contrast=True),
        audio_model=dict(name=str(dirs["audio_model"]), model_dim=MUQ["encoder_dim"], use_layer_idx=-1),
        text_model=dict(name=str(dirs["text_model"]), model_dim=XLMR["hidden_size"]),
        audio_transformer=TOWER,
        text_transformer=dict(TOWER, max_seq_len=128),
    )
    torch.manual_seed(seed + 2)
    muq.MuQMuLan(config).eval().save_pretrained(dirs["model"])
    return dirs
