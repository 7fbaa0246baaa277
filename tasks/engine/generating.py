"""Causal language models at inference: batched greedy (or sampled) generation with left padding and the KV cache,
and teacher-forced losses (validation loss, a reference answer's likelihood, a prompt's perplexity).

Generation is transformers' own `generate` with the model's saved `generation_config` (what `pipeline("text-
generation")` uses too), so tuneline and the pipeline give the same greedy answers. Rows are sorted by prompt length
and batched, so left padding stays small. Needs only numpy and torch (and the model's transformers class).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from tasks.engine.splits import IGNORE_INDEX, bucketed_batches, shifted_targets


@dataclass
class Generated:
    """Per row: the new token ids (no prompt, no padding, stop token dropped), why generation ended ("stop": an end
    token or stop string; "length": max_new_tokens reached), and the mean probability of the chosen tokens."""
    tokens: list[np.ndarray]
    finish: list[str]
    mean_token_prob: np.ndarray


def left_pad(rows: Sequence[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def end_ids(generation_config) -> set[int]:
    eos = generation_config.eos_token_id
    return set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])


@torch.inference_mode()
def generate(model, prompts: Sequence[np.ndarray], pad_id: int, batch_size: int, device: torch.device,
             tokenizer=None, desc: str = "generate", generation_config=None) -> Generated:
    """New tokens for each prompt (token ids, the chat template applied), in the prompts' order. `tokenizer` is
    what transformers needs to honour the config's stop strings."""
    from tqdm.auto import tqdm

    model.eval()
    import copy

    config = copy.deepcopy(generation_config or model.generation_config)
    # what this function reads back, set on the config (transformers deprecates mixing a config with arguments)
    config.pad_token_id, config.return_dict_in_generate, config.output_scores = pad_id, True, True
    stops = end_ids(config)
    tokens: list[Optional[np.ndarray]] = [None] * len(prompts)
    finish = [""] * len(prompts)
    mean_prob = np.zeros(len(prompts), dtype=np.float32)
    batches = bucketed_batches(np.array([len(p) for p in prompts]), batch_size)
    for idx in tqdm(batches, total=len(batches), desc=desc, unit="batch"):
        ids, mask = left_pad([prompts[i] for i in idx], pad_id)
        extra = {"tokenizer": tokenizer} if config.stop_strings else {}
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config,
                             **extra)
        new = out.sequences[:, ids.shape[1]:].cpu().numpy()
        # log-probabilities of the chosen tokens under the (processed) next-token distribution
        chosen = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).float().cpu()
        for row, i in enumerate(idx):
            seq = new[row]
            ended = next((t for t, tok in enumerate(seq) if tok in stops), None)
            # after the end token transformers pads with pad_id, which may be the end token itself
            kept = seq[:ended] if ended is not None else seq
            if ended is None:  # a stop string ended it: transformers filled the rest of the row with padding
                while len(kept) and kept[-1] == pad_id:
                    kept = kept[:-1]
            n = len(kept) + (ended is not None)
            stopped = ended is not None or _hit_stop_string(kept, tokenizer, config)
            tokens[i] = kept.astype(np.int64)
            finish[i] = "stop" if stopped else "length"
            mean_prob[i] = float(chosen[row, :n].exp().mean()) if n else 0.0
    return Generated(tokens, finish, mean_prob)  # type: ignore[arg-type]


def _hit_stop_string(kept: np.ndarray, tokenizer, config) -> bool:
    if not config.stop_strings or tokenizer is None:
        return False
    text = tokenizer.decode(kept, skip_special_tokens=True)
    return any(s in text for s in config.stop_strings)


@torch.inference_mode()
def token_losses(model, ids: Sequence[np.ndarray], starts: Sequence[int], pad_id: int, batch_size: int,
                 device: torch.device, desc: str = "score", hidden: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Teacher-forced negative log-likelihood of each row's tokens from `starts[i]` on (the response after its
    prompt; 1 for a whole prompt): per row the summed NLL and the number of scored tokens; with `hidden`, the
    mean-pooled last hidden layer over each row's tokens (an embedding for drift)."""
    from tqdm.auto import tqdm

    from tasks.engine.batching import mean_pool
    from tasks.engine.splits import collate

    model.eval()
    nll = np.zeros(len(ids), dtype=np.float64)
    counted = np.zeros(len(ids), dtype=np.int64)
    emb = None
    batches = bucketed_batches(np.array([len(r) for r in ids]), batch_size)
    for idx in tqdm(batches, total=len(batches), desc=desc, unit="batch"):
        batch, mask = collate([ids[i] for i in idx], pad_id)
        targets = shifted_targets([ids[i] for i in idx], [starts[i] for i in idx], batch.shape[1])
        out = model(input_ids=batch.to(device), attention_mask=mask.to(device), output_hidden_states=hidden)
        logits = out.logits.float()
        t = targets.to(device)
        per_token = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), t.reshape(-1),
                                                      ignore_index=IGNORE_INDEX, reduction="none").view(t.shape)
        nll[idx] = per_token.sum(dim=1).double().cpu().numpy()
        counted[idx] = (t != IGNORE_INDEX).sum(dim=1).cpu().numpy()
        if hidden:
            pooled = mean_pool(out.hidden_states[-1], mask.to(device)).cpu().numpy()
            emb = np.zeros((len(ids), pooled.shape[1]), dtype=np.float32) if emb is None else emb
            emb[idx] = pooled
    return nll, counted, emb
